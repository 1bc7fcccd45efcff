"""A Webhook trigger's authentication settings, read from its ``inputs`` (pure but for reading the
environment variables that ``env:NAME`` secrets name, at delivery time).

``inputs`` of a ``Webhook`` trigger::

    webhookSlug: partner-orders           # /flows/api/webhook/partner-orders (or the flow id)
    webhookScheme: github                 # key (default) | github | stripe | slack | shopify | generic
    webhookSecret: env:PARTNER_SECRET     # or a literal; or webhookSecrets: [new, old] while rotating
    webhookAuth: none                     # instead of a secret: accept unauthenticated deliveries

A trigger with neither a secret nor ``webhookAuth: none`` is refused at registration: an open
endpoint that starts runs must be a decision written in the flow file, not an omission.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowjobs.core.manifest import FlowManifest
from flowjobs.core.webhooks.schemes import Scheme

#: The only value of ``webhookAuth``: deliveries need no secret.
OPEN_AUTH = "none"
#: A secret written ``env:NAME`` is read from the environment variable ``NAME`` at each delivery,
#: so flow files (often committed) never hold it, and a rotation needs no flow change.
ENV_PREFIX = "env:"
#: At most two secrets: the new one and the one being retired.
MAX_SECRETS = 2
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Trigger inputs that hold secrets (masked by ``redact_trigger_inputs``).
SECRET_INPUTS = ("webhookSecret", "webhookSecrets")


class SecretUnavailable(Exception):
    """An ``env:NAME`` secret whose variable is unset or empty in this process."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"environment variable {name} (a webhook secret) is not set")


@dataclass(frozen=True)
class WebhookAuth:
    """How one Webhook trigger authenticates its deliveries."""

    scheme: Scheme | None
    """The signature scheme; None: open (``webhookAuth: none``)."""
    secrets: tuple[str, ...] = ()
    """The secrets as written, newest first: literals or ``env:NAME`` references."""

    def resolve(self, environ: Mapping[str, str] | None = None) -> list[bytes]:
        """The secrets' bytes, ``env:`` references read now; ``SecretUnavailable`` names a missing one."""
        environ = os.environ if environ is None else environ
        resolved: list[bytes] = []
        for secret in self.secrets:
            if secret.startswith(ENV_PREFIX):
                name = secret[len(ENV_PREFIX) :]
                value = environ.get(name, "")
                if not value:
                    raise SecretUnavailable(name)
                resolved.append(value.encode())
            else:
                resolved.append(secret.encode())
        return resolved


def read_webhook_auth(inputs: Mapping[str, Any]) -> tuple[WebhookAuth | None, list[str]]:
    """A Webhook trigger's auth from its inputs, and every problem found (the auth is None when
    there is one). Problems are phrased for ``flowjobs flows validate``."""
    problems: list[str] = []
    open_auth = inputs.get("webhookAuth")
    scheme_text = inputs.get("webhookScheme")
    secrets = _read_secrets(inputs, problems)
    scheme: Scheme | None = None
    if open_auth is not None and open_auth != OPEN_AUTH:
        problems.append(
            f"webhookAuth may only be {OPEN_AUTH!r} (deliveries need no secret), not {open_auth!r}"
        )
    if scheme_text is not None:
        try:
            scheme = Scheme(str(scheme_text).lower()) if isinstance(scheme_text, str) else None
        except ValueError:
            scheme = None
        if scheme is None:
            choices = ", ".join(member.value for member in Scheme)
            problems.append(f"webhookScheme {scheme_text!r} is not one of {choices}")
    if open_auth == OPEN_AUTH:
        if secrets or scheme_text is not None:
            problems.append(
                f"webhookAuth: {OPEN_AUTH} cannot be combined with webhookSecret(s) or webhookScheme"
            )
        return (None if problems else WebhookAuth(None)), problems
    if not secrets and "webhookSecret" not in inputs and "webhookSecrets" not in inputs:
        problems.append(
            "a Webhook trigger needs webhookSecret (or webhookSecrets: [new, old] while rotating), "
            f"or webhookAuth: {OPEN_AUTH} to accept unauthenticated deliveries"
        )
    if problems:
        return None, problems
    return WebhookAuth(scheme or Scheme.key, tuple(secrets)), []


def webhook_auth_problems(inputs: Mapping[str, Any]) -> list[str]:
    """Every problem of a Webhook trigger's auth inputs (registration's check)."""
    return read_webhook_auth(inputs)[1]


def _read_secrets(inputs: Mapping[str, Any], problems: list[str]) -> list[str]:
    if "webhookSecret" in inputs and "webhookSecrets" in inputs:
        problems.append("give webhookSecret or webhookSecrets, not both")
        return []
    if "webhookSecrets" in inputs:
        given = inputs["webhookSecrets"]
        if not isinstance(given, list) or not 1 <= len(given) <= MAX_SECRETS:
            problems.append(
                f"webhookSecrets must be a list of 1 to {MAX_SECRETS} secrets (the new one first)"
            )
            return []
        secrets = given
    elif "webhookSecret" in inputs:
        secrets = [inputs["webhookSecret"]]
    else:
        return []
    bad = False
    for secret in secrets:
        if not isinstance(secret, str) or not secret.strip():
            problems.append("a webhook secret must be a non-empty string")
            bad = True
        elif secret.startswith(ENV_PREFIX) and not _ENV_NAME.fullmatch(secret[len(ENV_PREFIX) :]):
            problems.append(
                f"webhook secret {secret!r}: after {ENV_PREFIX!r} comes an environment variable name"
            )
            bad = True
    return [] if bad else list(secrets)


def redact_trigger_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A trigger's inputs fit to show (API, UI, CLI): literal secrets masked, ``env:`` references
    kept (they name a variable, not a value)."""

    def mask(secret: Any) -> Any:
        return secret if isinstance(secret, str) and secret.startswith(ENV_PREFIX) else "***"

    shown = dict(inputs)
    if "webhookSecret" in shown:
        shown["webhookSecret"] = mask(shown["webhookSecret"])
    if isinstance(shown.get("webhookSecrets"), list):
        shown["webhookSecrets"] = [mask(secret) for secret in shown["webhookSecrets"]]
    return shown


def shown_manifest(manifest: FlowManifest) -> FlowManifest:
    """A manifest fit to show: every trigger's inputs through ``redact_trigger_inputs``."""
    triggers = {
        key: trigger.model_copy(update={"inputs": redact_trigger_inputs(trigger.inputs)})
        for key, trigger in manifest.triggers.items()
    }
    return manifest.model_copy(update={"triggers": triggers})
