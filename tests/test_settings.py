"""Settings: environment over the TOML file over defaults; a bad value names its setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowjobs.errors import InvalidSettings
from flowjobs.settings import load_settings


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("REDIS_URL", "FLOWJOBS_QUEUE", "FLOWJOBS_KEY_PREFIX", "FLOWJOBS_CLAIM_LEASE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "flowjobs.toml"
    monkeypatch.setenv("FLOWJOBS_CONFIG", str(path))
    return path


def test_defaults_when_nothing_is_set(config: Path) -> None:
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.queue == "flowjobs" and settings.key_prefix == "flowjobs:"
    assert settings.claim_lease_seconds == 10 and settings.handler_module_names == ["workers.handlers"]
    assert settings.job_url("abc") == "http://127.0.0.1:9181/0/view/job/abc"


def test_file_overrides_defaults_and_environment_overrides_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text('REDIS_URL = "redis://db:6379/2"\nqueue = "from-file"\nretention_days = 3\n')
    monkeypatch.setenv("FLOWJOBS_QUEUE", "from-env")
    settings = load_settings()
    assert settings.redis_url == "redis://db:6379/2"
    assert settings.queue == "from-env"
    assert settings.retention_seconds == 3 * 86400


def test_invalid_values_name_every_bad_setting(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWJOBS_CLAIM_LEASE_SECONDS", "-1")
    monkeypatch.setenv("FLOWJOBS_HANDLER_MODULES", "workers.handlers, not a module")
    with pytest.raises(InvalidSettings) as error:
        load_settings()
    assert "FLOWJOBS_CLAIM_LEASE_SECONDS" in str(error.value)
    assert "FLOWJOBS_HANDLER_MODULES" in str(error.value) and "'not a module'" in str(error.value)
