"""The web process's front door: an ASGI middleware in front of every route (the API, the flows UI,
its static files and the mounted rq-dashboard) that

- serves only allowed hosts (``Host`` header; ``FLOWJOBS_WEB_ALLOWED_HOSTS``, by default the names of
  the address it is bound to): a page on a rebound DNS name cannot read the API (400);
- refuses state changes a browser sends from another site (403): an unsafe method (anything but GET,
  HEAD, OPTIONS) whose ``Sec-Fetch-Site`` is not ``same-origin``/``none``, or whose ``Origin`` is not
  the request's own host nor in ``FLOWJOBS_WEB_ALLOWED_ORIGINS`` (``null`` and unparsable origins
  included); outside the API (``/flows/api/...``), where only browsers post forms, an unsafe
  request with neither header is refused too, so curl and scripts keep using the API only;
- refuses another site's subresource loads (``<img>``, ``<script>``, frames, no-cors fetches) when
  the browser says where they come from (``Sec-Fetch-*``), so no GET link of rq-dashboard is a weapon;
  a top-level navigation from another site (a link to a run page) is served;
- adds ``X-Content-Type-Options``, ``X-Frame-Options`` and ``Referrer-Policy`` to every response
  that does not set its own.

The webhook route (``/flows/api/webhook/...``) is exempt from the browser checks: its senders are
servers, and it verifies each delivery itself. The Host check applies to it as to every route.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flowjobs.core.errors import InvalidSettings
from flowjobs.core.urls import API_PREFIX
from flowjobs.settings import Settings, normal_origin, split_list
from flowjobs.web.auth import WEBHOOK_PREFIX, Credentials

log = structlog.get_logger("flowjobs.web.guard")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
#: ``Sec-Fetch-Site`` values of a request the user made on this origin (``none``: typed, bookmarked).
OWN_SITE = frozenset({"same-origin", "none"})
#: Added to every response that lacks them (a route's own value wins).
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
)


def is_loopback(host: str) -> bool:
    """Whether a bind address (or host name) only reaches this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse (``InvalidSettings``, one line) to serve a non-loopback address with no auth unless
    ``FLOWJOBS_WEB_OPEN`` says so."""
    if settings.web_open or is_loopback(settings.web_host) or Credentials.from_settings(settings).configured:
        return
    raise InvalidSettings(
        f"refusing to serve {settings.web_host or '0.0.0.0'!r} (not loopback) with no auth: set "
        "FLOWJOBS_WEB_TOKEN and/or FLOWJOBS_WEB_USER and FLOWJOBS_WEB_PASSWORD, or FLOWJOBS_WEB_OPEN=true "
        "to serve it open"
    )


def allowed_hosts(settings: Settings) -> tuple[str, ...]:
    """Host patterns served: ``FLOWJOBS_WEB_ALLOWED_HOSTS``, else the bind address's names (any host,
    ``*``, for a wildcard bind: the names clients use are not known there, and auth is then
    mandatory unless the operator set ``FLOWJOBS_WEB_OPEN``)."""
    if settings.web_allowed_hosts is not None:
        return tuple(host.lower().strip("[]") for host in split_list(settings.web_allowed_hosts))
    bind = settings.web_host.strip("[]").lower()
    if bind in WILDCARD_ADDRESSES:
        return ("*",)
    return tuple(dict.fromkeys((*(() if is_loopback(bind) else (bind,)), *LOOPBACK_NAMES)))


def host_name(host_header: str) -> str | None:
    """The host of a ``Host`` header value without its port (IPv6 without brackets), lower-case;
    None when malformed."""
    value = host_header.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return name or None
    name, colon, port = value.partition(":")
    if colon and not port.isdigit():
        return None
    return name or None


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether a host name matches one pattern: exact, ``*`` (any), ``*.domain`` (its subdomains)."""
    return any(
        pattern == "*" or host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
        for pattern in patterns
    )


@dataclass(frozen=True)
class Refusal:
    """Why a request is not served: status, error name, reason."""

    status: int
    error: str
    detail: str


class GuardMiddleware:
    """The front door (see the module): Host allowlist, cross-site refusals, security headers."""

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...], origins: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send_secured)
            return
        log.info("web.request_refused", path=scope["path"], method=scope["method"], reason=refusal.detail)
        body = json.dumps({"detail": refusal.detail, "error": refusal.error}).encode()
        await send_secured(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send_secured({"type": "http.response.body", "body": body})

    def refusal(self, scope: Scope) -> Refusal | None:
        """Why this request is refused, or None to serve it."""
        headers: dict[bytes, list[str]] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, []).append(value.decode("latin-1"))
        hosts = headers.get(b"host", [])
        host = hosts[0] if len(hosts) == 1 else None
        name = host_name(host) if host is not None else None
        if self.hosts != ("*",) and (name is None or not host_matches(name, self.hosts)):
            served = ", ".join(self.hosts)
            detail = f"Host {host!r} is not served here (served: {served}; FLOWJOBS_WEB_ALLOWED_HOSTS)"
            return Refusal(400, "HostNotAllowed", detail if len(hosts) <= 1 else "several Host headers")
        path: str = scope["path"]
        if path.startswith(WEBHOOK_PREFIX):
            return None
        site = _single(headers, b"sec-fetch-site")
        if scope["method"] in SAFE_METHODS:
            return self._foreign_load(headers, site)
        return self._foreign_change(path, host, _single(headers, b"origin"), site)

    def _foreign_load(self, headers: dict[bytes, list[str]], site: str | None) -> Refusal | None:
        """Another site's subresource load or frame of a page (a top-level navigation is served)."""
        if site is None or site in OWN_SITE:
            return None
        if (
            _single(headers, b"sec-fetch-mode") == "navigate"
            and _single(headers, b"sec-fetch-dest") == "document"
        ):
            return None
        return Refusal(403, "CrossSiteRequest", f"cross-site load refused (Sec-Fetch-Site: {site})")

    def _foreign_change(
        self, path: str, host: str | None, origin: str | None, site: str | None
    ) -> Refusal | None:
        """An unsafe request from another site, or a form post without any sign of its origin."""
        if site is not None and site not in OWN_SITE:
            return Refusal(403, "CrossSiteRequest", f"cross-site request refused (Sec-Fetch-Site: {site})")
        if origin is not None:
            normal = normal_origin(origin)
            if normal is None or not (normal in self.origins or _same_host(normal, host)):
                return Refusal(
                    403,
                    "CrossSiteRequest",
                    f"cross-site request refused: Origin {origin!r} is neither this host nor in "
                    "FLOWJOBS_WEB_ALLOWED_ORIGINS",
                )
            return None
        if site is None and not path.startswith(f"{API_PREFIX}/"):
            return Refusal(
                403,
                "CrossSiteRequest",
                "request refused: no Origin header (browsers send one with every form post; "
                f"scripts use the API under {API_PREFIX}/)",
            )
        return None


def _single(headers: dict[bytes, list[str]], name: bytes) -> str | None:
    """A header's value (several occurrences joined, so they never pass as one)."""
    values = headers.get(name)
    return ", ".join(values).strip().lower() if values else None


def _same_host(origin: str, host: str | None) -> bool:
    """Whether a normalized origin names the request's own ``Host`` (a scheme's default port either
    written or not)."""
    if host is None:
        return False
    scheme, _, authority = origin.partition("://")
    default = f"{authority}:{443 if scheme == 'https' else 80}"
    return host.strip().lower() in (authority, default)


def install_guard(app: FastAPI, settings: Settings) -> None:
    """Put ``GuardMiddleware`` in front of ``app`` (outermost: install it after auth) for the
    settings' hosts and origins."""
    check_exposure(settings)
    hosts = allowed_hosts(settings)
    origins = frozenset(
        filter(None, (normal_origin(origin) for origin in split_list(settings.web_allowed_origins)))
    )
    if hosts == ("*",) and not Credentials.from_settings(settings).configured:
        log.warning(
            "web.open_to_any_host",
            detail="no auth and every Host served: a page on any DNS name pointed here can use the "
            "API; set FLOWJOBS_WEB_ALLOWED_HOSTS to the names clients use",
        )
    app.add_middleware(GuardMiddleware, hosts=hosts, origins=origins)
