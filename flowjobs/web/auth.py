"""Web auth: a Bearer token (``FLOWJOBS_WEB_TOKEN``) and/or HTTP Basic
(``FLOWJOBS_WEB_USER`` / ``FLOWJOBS_WEB_PASSWORD``) in front of every route of the web process —
the API, the flows UI and rq-dashboard — except the health check and the webhook route (which
has its own verification). Nothing configured: the process is open and says so at start; blank
values are refused when the settings load, and ``flowjobs.web.guard.check_exposure`` refuses an
open process on an address other machines reach unless ``FLOWJOBS_WEB_OPEN`` says so.

An ASGI middleware, not a FastAPI dependency, so the mounted rq-dashboard (WSGI) and static
files are covered too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from flowjobs.core.urls import API_PREFIX, METRICS_PATH
from flowjobs.settings import Settings

log = structlog.get_logger("flowjobs.web.auth")

#: The webhook receiver's routes (senders are servers; each delivery is signed or keyed per flow).
WEBHOOK_PREFIX = f"{API_PREFIX}/webhook/"
#: Paths served without auth: the health check (load balancers, ``flowjobs up``'s wait) and the
#: webhook receiver.
OPEN_PATHS = frozenset({f"{API_PREFIX}/health"})
OPEN_PREFIXES = (WEBHOOK_PREFIX,)
REALM = "flowjobs"


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of SHA-256 digests: ``compare_digest`` on the strings themselves
    returns early on a length mismatch, which tells the secret's length."""
    given_digest = hashlib.sha256(given.encode()).digest()
    return hmac.compare_digest(given_digest, hashlib.sha256(expected.encode()).digest())


class Credentials:
    """What a request may present: a token, a user and password, or both (``Settings`` refuses
    blank ones, so a value given is a credential required)."""

    def __init__(self, token: str | None, user: str | None, password: str | None) -> None:
        self.token = token
        self.basic = (user, password) if user is not None and password is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> Credentials:
        """The web credentials of the settings."""
        password = settings.web_password.get_secret_value() if settings.web_password else None
        token = settings.web_token.get_secret_value() if settings.web_token else None
        return cls(token, settings.web_user, password)

    @property
    def configured(self) -> bool:
        """Whether any credential is set (otherwise everything is open)."""
        return self.token is not None or self.basic is not None

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries a configured credential."""
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme, value = scheme.lower(), value.strip()
        if scheme == "bearer" and self.token is not None:
            return _same(value, self.token)
        if scheme == "basic" and self.basic is not None:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            # Both compared whatever the first says, so timing tells nothing about the user name.
            user_ok = _same(user, self.basic[0])
            password_ok = _same(password, self.basic[1])
            return bool(sep) and user_ok and password_ok
        return False

    def challenge(self) -> str:
        """``WWW-Authenticate`` value: Basic when configured (browsers then prompt), else Bearer."""
        return f'Basic realm="{REALM}"' if self.basic is not None else f'Bearer realm="{REALM}"'


def is_open_path(path: str, extra: frozenset[str] = frozenset()) -> bool:
    """Paths that never require auth (and ``extra`` ones the settings open)."""
    return path in OPEN_PATHS or path in extra or path.startswith(OPEN_PREFIXES)


class AuthMiddleware:
    """Refuses (401, JSON ``detail``) every HTTP request to a protected path without a valid
    ``Authorization`` header."""

    def __init__(
        self, app: ASGIApp, credentials: Credentials, open_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"], self.open_paths):
            await self.app(scope, receive, send)
            return
        authorization = next(
            (value.decode("latin-1") for name, value in scope["headers"] if name == b"authorization"), None
        )
        if self.credentials.accepts(authorization):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "authentication required"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", self.credentials.challenge().encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_auth(app: FastAPI, settings: Settings) -> None:
    """Put ``app`` (mounts included) behind the configured credentials, or log a warning that it is
    open when none are."""
    credentials = Credentials.from_settings(settings)
    if not credentials.configured:
        log.warning(
            "web.auth_disabled",
            detail="every route is open: set FLOWJOBS_WEB_TOKEN and/or FLOWJOBS_WEB_USER and "
            "FLOWJOBS_WEB_PASSWORD",
        )
        return
    log.info("web.auth_enabled", bearer=credentials.token is not None, basic=credentials.basic is not None)
    open_paths = frozenset({METRICS_PATH}) if settings.metrics_open else frozenset()
    app.add_middleware(AuthMiddleware, credentials=credentials, open_paths=open_paths)
