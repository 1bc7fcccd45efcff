"""Settings: environment over the TOML file over defaults; a bad value names its setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from redis.connection import SSLConnection
from redis.sentinel import SentinelConnectionPool

from flowjobs.cli import cli
from flowjobs.core.errors import InvalidSettings
from flowjobs.factory import connect
from flowjobs.settings import load_settings
from tests.conftest import free_port


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (
        "REDIS_URL",
        "FLOWJOBS_QUEUE",
        "FLOWJOBS_KEY_PREFIX",
        "FLOWJOBS_CLAIM_LEASE_SECONDS",
        "FLOWJOBS_REDIS_SENTINELS",
        "FLOWJOBS_REDIS_SENTINEL_MASTER",
        "FLOWJOBS_REDIS_WAIT_REPLICAS",
        "FLOWJOBS_REDIS_WAIT_TIMEOUT_MS",
    ):
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


def test_sentinels_parse_to_addresses_and_keep_redis_url_credentials(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings()
    assert settings.redis_sentinels is None and settings.sentinel_addresses == []
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (0, 1000)
    monkeypatch.setenv("REDIS_URL", "redis://app:s3cret@ignored:6379/3")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINELS", " s1.example:26379, 10.0.0.2:26380 ,[::1]:26381 ")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_MASTER", "main")
    monkeypatch.setenv("FLOWJOBS_REDIS_WAIT_REPLICAS", "1")
    monkeypatch.setenv("FLOWJOBS_REDIS_WAIT_TIMEOUT_MS", "250")
    settings = load_settings()
    assert settings.sentinel_addresses == [("s1.example", 26379), ("10.0.0.2", 26380), ("::1", 26381)]
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (1, 250)
    # The client asks the Sentinels for "main" (nothing is connected yet) and logs in as REDIS_URL says.
    pool = connect(settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "main"
    assert [s.connection_pool.connection_kwargs["port"] for s in pool.sentinel_manager.sentinels] == [
        26379,
        26380,
        26381,
    ]
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "app", "s3cret")
    assert "host" not in kwargs


SENTINELS = "FLOWJOBS_REDIS_SENTINELS"


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        (SENTINELS, "s1:26379,s2", "'s2' is not host:port"),
        (SENTINELS, "s1:0", "the port must be 1 to 65535"),
        (SENTINELS, "s1:99999", "the port must be 1 to 65535"),
        (SENTINELS, "s1:x", "the port must be 1 to 65535"),
        (SENTINELS, "::1:26379", "[address]:port for IPv6"),
        (SENTINELS, "[nope]:26379", "not an IPv6 address"),
        (SENTINELS, "redis://s1:26379", "is not host:port"),
        (SENTINELS, " , ", "lists no Sentinel"),
        ("FLOWJOBS_REDIS_SENTINEL_MASTER", " ", "monitored primary's name"),
        ("FLOWJOBS_REDIS_WAIT_REPLICAS", "-1", "an integer >= 0 and <= 100"),
        ("FLOWJOBS_REDIS_WAIT_TIMEOUT_MS", "0", "an integer >= 1 and <= 60000"),
    ],
)
def test_bad_sentinel_and_wait_settings_are_one_line(
    config: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    # Each one alone with its partner set right, so the message is about the bad value only.
    monkeypatch.setenv(SENTINELS, "s1:26379")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_MASTER", "main")
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as error:
        load_settings()
    message = str(error.value)
    assert message.startswith(f"invalid setting {name}: ") and problem in message and "\n" not in message


def test_sentinels_and_their_master_go_together(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINELS", "s1:26379")
    with pytest.raises(InvalidSettings, match="must be set together"):
        load_settings()
    monkeypatch.delenv("FLOWJOBS_REDIS_SENTINELS")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_MASTER", "main")
    with pytest.raises(InvalidSettings, match="must be set together"):
        load_settings()


def test_the_sentinels_own_credentials_and_tls_reach_only_the_sentinel_connections(
    config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made")
    monkeypatch.setenv("REDIS_URL", "redis://app:primary-secret@ignored:6379/0")
    monkeypatch.setenv(SENTINELS, "s1:26379")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_MASTER", "main")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_USERNAME", "watcher")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_PASSWORD", "sentinel-secret")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_TLS", "true")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE", str(ca))
    settings = load_settings()
    assert "sentinel-secret" not in repr(settings)
    pool = connect(settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    (sentinel,) = pool.sentinel_manager.sentinels
    to_sentinel = sentinel.connection_pool.connection_kwargs
    assert (to_sentinel["username"], to_sentinel["password"]) == ("watcher", "sentinel-secret")
    assert sentinel.connection_pool.connection_class is SSLConnection
    assert to_sentinel["ssl_ca_certs"] == str(ca)
    to_primary = pool.connection_kwargs
    assert (to_primary["username"], to_primary["password"]) == ("app", "primary-secret")


SENTINEL_SET = {SENTINELS: "s1:26379", "FLOWJOBS_REDIS_SENTINEL_MASTER": "main"}
NEED = "need FLOWJOBS_REDIS_SENTINELS"


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"FLOWJOBS_REDIS_SENTINEL_PASSWORD": "pw"}, f"FLOWJOBS_REDIS_SENTINEL_PASSWORD {NEED}"),
        ({"FLOWJOBS_REDIS_SENTINEL_TLS": "true"}, f"FLOWJOBS_REDIS_SENTINEL_TLS {NEED}"),
        (
            {**SENTINEL_SET, "FLOWJOBS_REDIS_SENTINEL_USERNAME": "u"},
            "FLOWJOBS_REDIS_SENTINEL_USERNAME needs FLOWJOBS_REDIS_SENTINEL_PASSWORD",
        ),
        (
            {**SENTINEL_SET, "FLOWJOBS_REDIS_SENTINEL_PASSWORD": " "},
            "invalid setting FLOWJOBS_REDIS_SENTINEL_PASSWORD: is empty or blank",
        ),
        (
            {**SENTINEL_SET, "FLOWJOBS_REDIS_SENTINEL_TLS": "true",
             "FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE": "/nonexistent/ca.pem"},
            "invalid setting FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE",
        ),
        (
            {**SENTINEL_SET, "FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE": __file__},
            "FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE needs FLOWJOBS_REDIS_SENTINEL_TLS=true",
        ),
    ],
)
def test_sentinel_credentials_that_would_be_ignored_are_refused(
    config: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettings) as error:
        load_settings()
    assert problem in str(error.value) and "\n" not in str(error.value)
    assert "pw" not in str(error.value).replace("PASSWORD", "")


def test_a_bad_sentinel_is_one_line_from_the_cli(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINELS", "s1:26379,s2")
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_MASTER", "main")
    answer = CliRunner().invoke(cli, ["runs", "list"])
    assert answer.exit_code == 2
    assert answer.stderr.strip() == (
        "error: invalid setting FLOWJOBS_REDIS_SENTINELS: 's2' is not host:port ([address]:port for IPv6)"
    )


def test_sentinels_that_name_no_primary_are_one_line_and_exit_4(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINELS", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("FLOWJOBS_REDIS_SENTINEL_MASTER", "main")
    answer = CliRunner().invoke(cli, ["runs", "list"])
    assert answer.exit_code == 4
    assert answer.stderr.strip() == (
        "error: Redis is unreachable (FLOWJOBS_REDIS_SENTINELS): "
        "no Sentinel answered with a primary 'main' that is up"
    )
