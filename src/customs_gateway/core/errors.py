"""The one exception hierarchy: every refusal carries a stable machine code.

Codes are dotted (`signature.invalid`, `schema.container_check_digit`) and are used alike in
problem+json responses, signed refusals and the audit log. `status` is the HTTP status an edge
should answer with; `retryable` tells a sender whether trying the same envelope later can help.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .refusals import is_retryable


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code: str = "gateway.error"
    status: int = 400
    #: Every problem found, when there were several: ({field, code, detail}, ...), first = this one.
    errors: tuple[dict[str, Any], ...] = ()

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.field = field

    @property
    def retryable(self) -> bool:
        """Whether trying the same thing later can help: the refusal policy's word on this code."""
        return is_retryable(self.code)

    def moved(self, where: Callable[[str | None], str | None]) -> GatewayError:
        """This error with `field` and every listed problem's field mapped by `where` (a path in
        one document named as a path in the request that carried it); returns self."""
        self.field = where(self.field)
        self.errors = tuple({**x, "field": where(x.get("field"))} for x in self.errors)
        return self

    def diagnostics(self) -> dict[str, Any]:
        """A JSON-ready description (no secrets, no message bodies)."""
        out: dict[str, Any] = {"code": self.code, "detail": self.detail}
        if self.field is not None:
            out["field"] = self.field
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, field={self.field!r}, detail={self.detail!r})"


class SchemaError(GatewayError):
    """A message body or request document breaks a schema rule; `field` names the JSON path."""

    code = "schema.invalid"
    status = 422


class DecodeError(GatewayError):
    """Bytes that are not the structure they claim to be (bad JSON, bad base64, truncated)."""

    code = "decode.malformed"
    status = 400


class SignatureError(GatewayError):
    """A signature does not verify under the named key."""

    code = "signature.invalid"
    status = 403


class KeyStateError(GatewayError):
    """A key is unknown, not valid at the relevant time, revoked, or of the wrong kind."""

    code = "key.unknown"
    status = 403


class BindingError(GatewayError):
    """Inner document and outer header disagree, or the message is not addressed to us (G3)."""

    code = "binding.mismatch"
    status = 403


class DecryptError(GatewayError):
    """HPKE open failed (wrong key, wrong context, tampered ciphertext)."""

    code = "decrypt.failed"
    status = 403


class ReplayError(GatewayError):
    """Replay rules refused an envelope (skew window, conflicting duplicate)."""

    code = "replay.refused"
    status = 409


class SuiteError(GatewayError):
    """An HPKE suite or algorithm that is not supported or not announced."""

    code = "suite.unsupported"
    status = 400


class KeyFileError(GatewayError):
    """A private key file cannot be opened: wrong passphrase, tampered, or malformed."""

    code = "keyfile.invalid"
    status = 400


class ConfigError(GatewayError):
    """Configuration is invalid; `field` names the key."""

    code = "config.invalid"
    status = 500


class AuthError(GatewayError):
    """Missing or invalid credentials (401) or a role not admitted here (403)."""

    code = "auth.required"
    status = 401


class NotFound(GatewayError):
    """The named resource does not exist (or is not visible to this caller)."""

    code = "not_found"
    status = 404


class Conflict(GatewayError):
    """The request conflicts with stored state (e.g. an Idempotency-Key reused with another body)."""

    code = "conflict"
    status = 409


class StoreUnavailable(GatewayError):
    """Durable storage failed to commit; nothing was written. Retry later."""

    code = "store.unavailable"
    status = 503
