"""The webhook signature schemes at the path the README documents (``flowjobs.webhooks.schemes.sign``);
they live in the core, ``flowjobs.core.webhooks.schemes``."""

from flowjobs.core.webhooks.schemes import (
    SCHEMES,
    SIGNATURE_HEADERS,
    Encoding,
    Scheme,
    SchemeSpec,
    Verified,
    sign,
    verify,
)

__all__ = ["SCHEMES", "SIGNATURE_HEADERS", "Encoding", "Scheme", "SchemeSpec", "Verified", "sign", "verify"]
