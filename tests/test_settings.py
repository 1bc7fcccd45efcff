"""Settings: environment over the TOML file over defaults; a bad value names its setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowjobs.core.errors import InvalidSettings
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
    assert settings.web_base_url is None and settings.job_url("abc") is None, "links unknown, never guessed"
    based = settings.model_copy(update={"web_base_url": "http://127.0.0.1:9123"})
    assert based.job_url("abc") == "http://127.0.0.1:9123/rq/0/view/job/abc"


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


@pytest.mark.parametrize(
    ("name", "value", "limit"),
    [
        ("FLOWJOBS_RUN_TIMEOUT_SECONDS", "inf", "a finite number > 0 and <= 2592000"),
        ("FLOWJOBS_RUN_TIMEOUT_SECONDS", "1e12", "a finite number > 0 and <= 2592000"),
        ("FLOWJOBS_RUN_TIMEOUT_SECONDS", "nan", "a finite number > 0 and <= 2592000"),
        ("FLOWJOBS_RETENTION_DAYS", "inf", "a finite number > 0 and <= 3650"),
        ("FLOWJOBS_RETENTION_DAYS", "1e9", "a finite number > 0 and <= 3650"),
        ("FLOWJOBS_CLAIM_LEASE_SECONDS", "inf", "a finite number > 0 and <= 3600"),
        ("FLOWJOBS_RECOVERY_INTERVAL_SECONDS", "-inf", "a finite number > 0 and <= 3600"),
        ("FLOWJOBS_JOB_TIMEOUT_SECONDS", "1000000000", "an integer > 0 and <= 604800"),
        ("FLOWJOBS_MAX_DATA_DEPTH", "100000", "an integer >= 1 and <= 256"),
        ("FLOWJOBS_MAX_DATA_BYTES", "0", "an integer >= 1024 and <= 67108864"),
        ("FLOWJOBS_MAX_RUN_EVENTS", "9", "an integer >= 10 and <= 100000"),
        ("FLOWJOBS_MAX_RUN_EVENTS", "100001", "an integer >= 10 and <= 100000"),
    ],
)
def test_numbers_must_be_finite_and_bounded(
    config: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, limit: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as error:
        load_settings()
    assert str(error.value) == f"invalid setting {name}: must be {limit}"


def test_a_bad_number_in_the_file_is_refused_too(config: Path) -> None:
    config.write_text("run_timeout_seconds = inf\n")
    with pytest.raises(InvalidSettings, match="FLOWJOBS_RUN_TIMEOUT_SECONDS: must be a finite number"):
        load_settings()


def test_data_limits_default_and_can_be_set(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.max_data_depth, settings.max_data_bytes) == (64, 1024 * 1024)
    monkeypatch.setenv("FLOWJOBS_MAX_DATA_DEPTH", "8")
    monkeypatch.setenv("FLOWJOBS_MAX_DATA_BYTES", "4096")
    monkeypatch.setenv("FLOWJOBS_RUN_TIMEOUT_SECONDS", "2592000")
    settings = load_settings()
    assert (settings.max_data_depth, settings.max_data_bytes) == (8, 4096)
    assert settings.run_timeout_seconds == 2592000


def test_run_events_kept_default_and_can_be_set(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().max_run_events == 1000
    monkeypatch.setenv("FLOWJOBS_MAX_RUN_EVENTS", "50")
    assert load_settings().max_run_events == 50


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"FLOWJOBS_WEB_USER": "admin", "FLOWJOBS_WEB_PASSWORD": ""}, "FLOWJOBS_WEB_PASSWORD"),
        ({"FLOWJOBS_WEB_USER": " ", "FLOWJOBS_WEB_PASSWORD": "pw"}, "FLOWJOBS_WEB_USER"),
        ({"FLOWJOBS_WEB_TOKEN": "\t"}, "FLOWJOBS_WEB_TOKEN"),
        ({"FLOWJOBS_WEB_ALLOWED_HOSTS": " , "}, "FLOWJOBS_WEB_ALLOWED_HOSTS"),
    ],
)
def test_blank_web_credentials_and_hosts_are_refused_in_one_line(
    config: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], name: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(InvalidSettings) as error:
        load_settings()
    assert str(error.value).startswith(f"invalid setting {name}: ") and "\n" not in str(error.value)


def test_web_guard_settings_default_and_are_checked(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.web_max_header_bytes, settings.web_max_headers, settings.web_max_url_bytes) == (
        16384,
        100,
        8192,
    )
    assert settings.web_allowed_hosts is None and settings.web_allowed_origins == "" and not settings.web_open
    monkeypatch.setenv("FLOWJOBS_WEB_ALLOWED_HOSTS", "flows.example, [::1], *.ops.example")
    monkeypatch.setenv("FLOWJOBS_WEB_ALLOWED_ORIGINS", "https://ops.example, http://127.0.0.1:9000")
    assert load_settings().web_allowed_hosts == "flows.example, [::1], *.ops.example"
    for name, value, problem in [
        ("FLOWJOBS_WEB_ALLOWED_HOSTS", "flows.example:8000", "'flows.example:8000' is not a host name"),
        ("FLOWJOBS_WEB_ALLOWED_HOSTS", "https://flows.example", "'https://flows.example' is not a host name"),
        ("FLOWJOBS_WEB_ALLOWED_ORIGINS", "ops.example", "'ops.example' is not an origin"),
        ("FLOWJOBS_WEB_ALLOWED_ORIGINS", "null", "'null' is not an origin"),
        (
            "FLOWJOBS_WEB_ALLOWED_ORIGINS",
            "https://ops.example/app",
            "'https://ops.example/app' is not an origin",
        ),
        ("FLOWJOBS_WEB_MAX_HEADERS", "5", "must be an integer >= 10 and <= 1000"),
    ]:
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            with pytest.raises(InvalidSettings, match=f"^invalid setting {name}: ") as error:
                load_settings()
            assert problem in str(error.value)
