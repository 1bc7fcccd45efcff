"""Settings: environment variables override ``config/flowjobs.toml``, which overrides the defaults."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from flowjobs.core.errors import InvalidSettings
from flowjobs.core.limits import (
    DAY_SECONDS,
    DEFAULT_MAX_DATA_BYTES,
    DEFAULT_MAX_DATA_DEPTH,
    DEFAULT_MAX_RUN_EVENTS,
    MAX_DATA_BYTES,
    MAX_DATA_DEPTH,
    MAX_RETENTION_DAYS,
    MAX_RUN_EVENTS,
    MAX_RUN_SECONDS,
    MAX_STEP_SECONDS,
    MIN_DATA_BYTES,
    MIN_RUN_EVENTS,
    Bounded,
    ProcessSeconds,
    RunSeconds,
)
from flowjobs.core.trigger_headers import (
    DEFAULT_MAX_TRIGGER_HEADER_BYTES,
    DEFAULT_MAX_TRIGGER_HEADERS,
    DEFAULT_MAX_TRIGGER_HEADERS_BYTES,
    MAX_TRIGGER_HEADERS_BYTES,
    HeaderLimits,
)
from flowjobs.core.urls import rq_job_path

CONFIG_FILE_ENV = "FLOWJOBS_CONFIG"
DEFAULT_CONFIG_FILE = "config/flowjobs.toml"
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Bounds of ``FLOWJOBS_REDIS_WAIT_REPLICAS`` and ``FLOWJOBS_REDIS_WAIT_TIMEOUT_MS`` (a minute at most:
#: a trigger's caller waits that long, and ``WAIT 0`` would block it for ever).
MAX_WAIT_REPLICAS = 100
MAX_WAIT_TIMEOUT_MS = 60_000


def split_list(value: str) -> list[str]:
    """The items of a comma-separated setting, stripped, blank ones dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def host_port(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6 address]:port`` for IPv6) as a pair; ``ValueError`` saying why not."""
    host, colon, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        if not _is_ipv6(host[1:-1]):
            raise ValueError(f"'{text}' is not host:port ({host} is not an IPv6 address)")
        host = host[1:-1]
    elif not colon or not host or ":" in host or "/" in host or " " in host:
        raise ValueError(f"'{text}' is not host:port ([address]:port for IPv6)")
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"'{text}' is not host:port (the port must be 1 to 65535)")
    return host, int(port)


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


def normal_origin(text: str) -> str | None:
    """``text`` as a lower-case ``scheme://host[:port]`` origin (HTTP or HTTPS; the scheme's
    default port dropped, as browsers serialize it), or None when it is not one (``null``, a path,
    user info, a bad port)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None or parts.password is not None:
        return None
    if parts.path or parts.query or parts.fragment or text.strip().endswith(("?", "#")):
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")


class Settings(BaseSettings):
    """Every setting of flowjobs' processes (each a row of the README's settings table)."""

    model_config = SettingsConfigDict(env_prefix="FLOWJOBS_", extra="ignore", populate_by_name=True)

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    """Redis that holds the queues and the run records (with Sentinel: only its database number,
    user name, password and ``rediss://`` scheme are used)."""
    redis_sentinels: str | None = None
    """Comma-separated ``host:port`` of Redis Sentinels (``[::1]:26379`` for IPv6): when set, with
    ``redis_sentinel_master``, every process asks them for the primary and follows a failover."""
    redis_sentinel_master: str | None = None
    """Name of the primary the Sentinels monitor (their ``sentinel monitor <name> ...``)."""
    redis_sentinel_username: str | None = None
    """ACL user name the Sentinels require (with ``redis_sentinel_password``; none: ``default``)."""
    redis_sentinel_password: SecretStr | None = None
    """Password the Sentinels require (their ``requirepass`` or ACL user's); the primary's own
    password stays in ``REDIS_URL``."""
    redis_sentinel_tls: bool = False
    """Reach the Sentinels over TLS (their ``tls-port``), verified against the system's CAs, or
    ``redis_sentinel_tls_ca_file`` when set."""
    redis_sentinel_tls_ca_file: FilePath | None = None
    """CA bundle (PEM) the Sentinels' TLS certificates are verified against."""
    redis_wait_replicas: Annotated[int, Bounded(0, MAX_WAIT_REPLICAS)] = 0
    """Replicas that must acknowledge a new run before a trigger returns (Redis ``WAIT``; 0: off)."""
    redis_wait_timeout_ms: Annotated[int, Bounded(1, MAX_WAIT_TIMEOUT_MS)] = 1000
    """How long a trigger waits for those replicas, in milliseconds; fewer in time:
    ``ReplicasNotAcknowledged`` (HTTP 503)."""
    queue: str = Field(default="flowjobs", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    """RQ queue flowjobs' jobs go to."""
    key_prefix: str = Field(default="flowjobs:", min_length=1)
    """Prefix of every Redis key flowjobs writes (RQ's own keys keep theirs)."""
    flows_dir: Path = Path("config/flows")
    """Folder of flow files loaded by the CLI and workers."""
    handler_modules: str = "workers.handlers"
    """Comma-separated modules that workers import to register their step handlers."""
    retention_days: Annotated[float, Bounded(0, MAX_RETENTION_DAYS, exclusive_minimum=True)] = 14
    """How long finished runs are kept (their job ids included, resolvable through ``find_run_by_job``)."""
    max_run_events: Annotated[int, Bounded(MIN_RUN_EVENTS, MAX_RUN_EVENTS)] = DEFAULT_MAX_RUN_EVENTS
    """How many events a run keeps: its latest ones (sequences stay those of the whole history)."""
    rq_job_ttl_seconds: int = Field(default=86400, gt=0)
    """How long RQ keeps a finished job's hash and result stream (rq-dashboard's window on it), at
    most the retention: they are the bulk of a run's memory, so they go long before the run."""
    run_timeout_seconds: RunSeconds | None = None
    """Default run deadline (None: no deadline)."""
    claim_lease_seconds: ProcessSeconds = 10
    """How long a worker's claim on a step lasts without renewal (renewed every third of it); a dead
    worker's step is re-dispatched after it."""
    recovery_interval_seconds: ProcessSeconds = 2
    """Period of the duties (recovery, run deadlines) that every worker and the optional scheduler
    run; a Redis lock per duty makes N processes run each once per period."""
    schedule_interval_seconds: ProcessSeconds = 1
    """Period of the duty that fires due cron schedules and recurring jobs (every worker and the
    scheduler; a Redis lock makes N processes run it once per period)."""
    schedule_grace_seconds: Annotated[float, Bounded(0, MAX_RUN_SECONDS)] = 3600
    """How late a missed tick may still fire: after a downtime, a schedule fires once, for its
    latest missed tick, if that tick is at most this old; older missed ticks are skipped."""
    max_lost_attempts: int = Field(default=20, ge=0, le=1000)
    """How many attempts a step may lose with its whole worker (a killed worker, a node loss) and
    still be re-dispatched, with back-off (at least ``retry.max_attempts - 1`` for a step with
    ``retry``); then it fails instead. Generous: a lost worker is rarely the step's doing."""
    max_step_crashes: int = Field(default=3, ge=1, le=1000)
    """How many times a step may crash its work-horse (the worker lives on) before it fails for
    good, whatever its ``retry`` allows; within it the step's ``retry`` applies."""
    job_timeout_seconds: Annotated[int, Bounded(0, MAX_STEP_SECONDS, exclusive_minimum=True)] = 180
    """RQ job timeout of steps that set none."""
    max_data_depth: Annotated[int, Bounded(1, MAX_DATA_DEPTH)] = DEFAULT_MAX_DATA_DEPTH
    """How deep trigger data may nest (containers in containers)."""
    max_data_bytes: Annotated[int, Bounded(MIN_DATA_BYTES, MAX_DATA_BYTES)] = DEFAULT_MAX_DATA_BYTES
    """How large trigger data may be, encoded as JSON."""
    webhook_max_body_bytes: Annotated[int, Bounded(MIN_DATA_BYTES, MAX_DATA_BYTES)] = DEFAULT_MAX_DATA_BYTES
    """Largest webhook body accepted, in bytes (a larger one is refused with 413 before it is read
    whole: the declared ``Content-Length`` first, then the bytes as they arrive)."""
    webhook_replay_window_seconds: Annotated[int, Bounded(1, DAY_SECONDS)] = 300
    """Replay window of signed webhooks: a signed timestamp further from now is refused, and each
    signed delivery is remembered this long (twice, for clock skew) to refuse it again (409)."""
    webhook_rate_per_second: Annotated[float, Bounded(0, 1_000_000)] = 10
    """Webhook deliveries per second each flow accepts, on average (token bucket in Redis, shared
    by every web process; 0: no limit); beyond it, 429 with ``Retry-After``."""
    webhook_rate_burst: Annotated[int, Bounded(1, 1_000_000)] = 20
    """Webhook deliveries a flow accepts at once before the rate applies (the bucket's size)."""
    max_trigger_headers: Annotated[int, Bounded(1, 10_000)] = DEFAULT_MAX_TRIGGER_HEADERS
    """How many request headers a run stores (credentials are never stored); a trigger with more is
    refused (API 413, webhook 431) and nothing is written."""
    max_trigger_header_bytes: Annotated[int, Bounded(1, MAX_TRIGGER_HEADERS_BYTES)] = (
        DEFAULT_MAX_TRIGGER_HEADER_BYTES
    )
    """Largest value of a request header a run stores, in bytes; a longer one refuses the trigger."""
    max_trigger_headers_bytes: Annotated[int, Bounded(1, MAX_TRIGGER_HEADERS_BYTES)] = (
        DEFAULT_MAX_TRIGGER_HEADERS_BYTES
    )
    """Largest size of all the request headers a run stores (names and values), in bytes."""
    log_format: Literal["console", "json"] = "console"
    """Log rendering: pretty for people, JSON for log pipelines."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged."""
    web_base_url: str | None = None
    """Address people reach the web process at (``http://127.0.0.1:8000``): the base of the links
    flowjobs prints (a run's page, a job's rq-dashboard page). ``flowjobs web`` and ``flowjobs up``
    set it to the address they serve, for themselves and the processes they start; unset, printed
    links say it is unknown."""
    rq_dashboard_url: str | None = None
    """Base of rq-dashboard's pages (``<base>/view/job/<job_id>``) when it is not the web process's
    own: by default ``<web base URL>/rq/0``."""
    web_host: str = "127.0.0.1"
    """Address ``flowjobs web`` and ``flowjobs up`` listen on."""
    web_port: int = Field(default=8000, ge=0, le=65535)
    """Port ``flowjobs web`` and ``flowjobs up`` listen on."""
    web_token: SecretStr | None = None
    """Bearer token the web process requires (with or instead of Basic auth); unset with no
    user and password: the web process is open (and logs a warning saying so)."""
    web_user: str | None = None
    """HTTP Basic user name the web process requires (with ``web_password``)."""
    web_password: SecretStr | None = None
    """HTTP Basic password the web process requires (with ``web_user``)."""
    web_open: bool = False
    """Serve a non-loopback address with no auth (``FLOWJOBS_WEB_OPEN=true``): without it, ``flowjobs
    web`` and ``flowjobs up`` refuse to start on such an address unless a credential is set."""
    metrics_open: bool = False
    """Serve ``/metrics`` without the web process's auth (``FLOWJOBS_METRICS_OPEN=true``), for a
    Prometheus that sends no credential; the rest stays behind it."""
    web_allowed_hosts: str | None = None
    """Comma-separated host names the web process serves (``Host`` header, port aside; ``*`` any,
    ``*.example.com`` a domain's subdomains); others get 400. Unset: the loopback names when bound
    to a loopback address, that address plus them when bound to another, any host when bound to a
    wildcard (0.0.0.0, ::), where auth is then mandatory."""
    web_allowed_origins: str = ""
    """Comma-separated origins (``https://ops.example.com``) besides the request's own host whose
    pages may send state-changing requests (POST, PUT, PATCH, DELETE) to the web process."""
    web_max_header_bytes: Annotated[int, Bounded(1024, 1024 * 1024)] = 16 * 1024
    """Largest total of request header lines the server reads (``name: value`` and line end of
    each), in bytes; beyond it, 431 before the app runs."""
    web_max_headers: Annotated[int, Bounded(10, 1000)] = 100
    """Most request headers the server reads; beyond it, 431 before the app runs."""
    web_max_url_bytes: Annotated[int, Bounded(256, 1024 * 1024)] = 8 * 1024
    """Longest request target (path and query) the server reads, in bytes; beyond it, 414."""

    @field_validator("handler_modules")
    @classmethod
    def _modules_are_names(cls, value: str) -> str:
        for name in filter(None, (part.strip() for part in value.split(","))):
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a module name")
        return value

    @field_validator("web_base_url", "rq_dashboard_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @field_validator(
        "web_token", "web_user", "web_password", "redis_sentinel_username", "redis_sentinel_password"
    )
    @classmethod
    def _credential_not_blank(cls, value: SecretStr | str | None) -> SecretStr | str | None:
        # An unset shell variable (``FLOWJOBS_WEB_PASSWORD=``) must not turn auth off.
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is not None and not text.strip():
            raise PydanticCustomError("blank", "is empty or blank: set a value, or unset it")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_addresses(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not split_list(value):
            raise PydanticCustomError("blank", "lists no Sentinel: unset it, or list host:port items")
        for item in split_list(value):
            try:
                host_port(item)
            except ValueError as error:
                raise PydanticCustomError("sentinel", "{why}", {"why": str(error)}) from None
        return value

    @field_validator("redis_sentinel_master")
    @classmethod
    def _master_named(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or any(c.isspace() for c in value)):
            raise PydanticCustomError("master", "must be the monitored primary's name (no blanks)")
        return value

    @model_validator(mode="after")
    def _sentinels_with_master(self) -> Settings:
        # One without the other would silently connect to REDIS_URL's host instead.
        if (self.redis_sentinels is None) != (self.redis_sentinel_master is None):
            raise ValueError(
                "FLOWJOBS_REDIS_SENTINELS and FLOWJOBS_REDIS_SENTINEL_MASTER must be set together"
            )
        # A Sentinel option with no Sentinel to apply it to, or a user name with no password, would
        # be ignored without a word.
        options = {
            "FLOWJOBS_REDIS_SENTINEL_USERNAME": self.redis_sentinel_username is not None,
            "FLOWJOBS_REDIS_SENTINEL_PASSWORD": self.redis_sentinel_password is not None,
            "FLOWJOBS_REDIS_SENTINEL_TLS": self.redis_sentinel_tls,
            "FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE": self.redis_sentinel_tls_ca_file is not None,
        }
        stray = [name for name, given in options.items() if given]
        if stray and self.redis_sentinels is None:
            raise ValueError(f"{', '.join(stray)} need FLOWJOBS_REDIS_SENTINELS")
        if self.redis_sentinel_username is not None and self.redis_sentinel_password is None:
            raise ValueError("FLOWJOBS_REDIS_SENTINEL_USERNAME needs FLOWJOBS_REDIS_SENTINEL_PASSWORD")
        if self.redis_sentinel_tls_ca_file is not None and not self.redis_sentinel_tls:
            raise ValueError("FLOWJOBS_REDIS_SENTINEL_TLS_CA_FILE needs FLOWJOBS_REDIS_SENTINEL_TLS=true")
        return self

    @field_validator("web_allowed_hosts")
    @classmethod
    def _hosts_listed(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not split_list(value):
            raise PydanticCustomError("blank", "lists no host: unset it for the default, or list hosts")
        for host in split_list(value):
            if "/" in host or (":" in host and not _is_ipv6(host.strip("[]"))):
                raise PydanticCustomError(
                    "host", "'{host}' is not a host name (no scheme, no port)", {"host": host}
                )
        return value

    @field_validator("web_allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        for origin in split_list(value):
            if normal_origin(origin) is None:
                raise PydanticCustomError(
                    "origin", "'{origin}' is not an origin (scheme://host[:port])", {"origin": origin}
                )
        return value

    @model_validator(mode="after")
    def _password_with_user(self) -> Settings:
        # A user without a password (or the reverse) would silently leave Basic auth off.
        if (self.web_user is None) != (self.web_password is None):
            raise ValueError("FLOWJOBS_WEB_USER and FLOWJOBS_WEB_PASSWORD must be set together")
        return self

    @field_validator("rq_job_ttl_seconds")
    @classmethod
    def _ttl_within_retention(cls, value: int, info: ValidationInfo) -> int:
        days = info.data.get("retention_days")  # absent when it failed its own validation
        if days is not None and value > days * 86400:
            raise ValueError(f"must be at most the retention ({days:g} days = {days * 86400:g} s)")
        return value

    @property
    def retention_seconds(self) -> int:
        """``retention_days`` in seconds."""
        return int(self.retention_days * 86400)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs (empty without Sentinel)."""
        return [host_port(item) for item in split_list(self.redis_sentinels or "")]

    @property
    def trigger_header_limits(self) -> HeaderLimits:
        """The three ``max_trigger_header*`` settings together."""
        return HeaderLimits(
            self.max_trigger_headers, self.max_trigger_header_bytes, self.max_trigger_headers_bytes
        )

    @property
    def handler_module_names(self) -> list[str]:
        """``handler_modules`` as a list."""
        return [part.strip() for part in self.handler_modules.split(",") if part.strip()]

    def job_url(self, job_id: str) -> str | None:
        """rq-dashboard page of one job; None when neither the dashboard's nor the web process's
        address is known."""
        if self.rq_dashboard_url:
            return f"{self.rq_dashboard_url.rstrip('/')}/view/job/{job_id}"
        if self.web_base_url:
            return f"{self.web_base_url.rstrip('/')}{rq_job_path(job_id)}"
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the TOML file (``FLOWJOBS_CONFIG`` or the default)."""
        toml_file = Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment and the config file; ``InvalidSettings`` names every bad setting
    (one line for one, a list for several)."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        lines = [f"{_env_name(item['loc'])}: {item['msg']}" for item in error.errors()]
        if len(lines) == 1:
            raise InvalidSettings(f"invalid setting {lines[0]}") from error
        raise InvalidSettings("invalid settings:\n" + "\n".join(f"  - {line}" for line in lines)) from error


def _env_name(loc: tuple[int | str, ...]) -> str:
    if not loc:  # a check across settings (model validator): its message names them
        return "settings"
    field = str(loc[0])
    if field in ("redis_url", "REDIS_URL"):
        return "REDIS_URL"
    return f"FLOWJOBS_{field.upper()}"
