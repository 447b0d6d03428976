"""Typed errors, each carrying the stable wire code that clients switch on.

The dispatcher maps any exception to a reply; only these classes choose their
code. Everything else becomes ``internal`` so a bug can never leak a new,
unstable code to apps written against docs/protocol.md.
"""

from __future__ import annotations

from typing import Any

# The complete, stable set of wire error codes (docs/protocol.md).
CODES = (
    "bad_request", "unknown_op", "not_found", "busy", "too_large", "rate_limited",
    "timeout", "cancelled", "model_unavailable", "internal",
)


class RuvError(Exception):
    """Base class: an error that has a wire code."""

    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_wire(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return err


class BadRequest(RuvError):
    code = "bad_request"


class UnknownOp(RuvError):
    code = "unknown_op"


class NotFound(RuvError):
    code = "not_found"


class Busy(RuvError):
    code = "busy"


class TooLarge(RuvError):
    code = "too_large"


class RateLimited(RuvError):
    code = "rate_limited"


class Timeout(RuvError):
    code = "timeout"


class Cancelled(RuvError):
    code = "cancelled"


class ModelUnavailable(RuvError):
    code = "model_unavailable"


class Internal(RuvError):
    code = "internal"


class StorageError(RuvError):
    """The store could not write (full disk, read-only media); nothing was committed."""

    code = "internal"


class ConfigError(Exception):
    """A config file or override is invalid; ``errors`` names every bad key."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


class ModelIntegrityError(Exception):
    """A model file is missing or its sha256 does not match the catalogue."""


class ClientError(Exception):
    """Raised by the client for an error reply; ``code`` is the wire code."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class ClientTimeout(ClientError):
    """The daemon did not answer within the client's timeout."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


_BY_CODE = {cls.code: cls for cls in (BadRequest, UnknownOp, NotFound, Busy, TooLarge, RateLimited,
                                       Timeout, Cancelled, ModelUnavailable, Internal)}


def from_wire(err: dict[str, Any]) -> ClientError:
    """Client side: an error map from a reply to a ClientError."""
    code = str(err.get("code", "internal"))
    if code == "timeout":
        return ClientTimeout(str(err.get("message", "")))
    return ClientError(code, str(err.get("message", "")), err.get("details"))
