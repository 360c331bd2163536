"""API tokens: one role each, shown once, stored as a hash, compared in constant time (G8).

A token reads `cgw_<id>.<secret>`: the id finds the record, the secret proves possession. The
secret is 32 random bytes, so SHA-256 (not a slow password hash) is the right digest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Final

from ..core.encoding import b64url
from ..core.errors import AuthError
from ..core.keys import RandBytes

ROLES: Final = ("agency", "admin", "auditor")
_TOKEN_RE: Final = re.compile(r"^cgw_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewToken:
    id: str
    secret: str  # the full bearer string; shown once
    secret_hash: bytes


TOKEN_ID_RE: Final = re.compile(r"^[0-9a-f]{16}$")


def new_token(randbytes: RandBytes = os.urandom) -> NewToken:
    tid = randbytes(8).hex()
    secret = b64url(randbytes(32))
    return NewToken(tid, f"cgw_{tid}.{secret}", hashlib.sha256(secret.encode()).digest())


def parse_bearer(header: str | None) -> tuple[str, bytes]:
    """Split an Authorization header into (token id, secret hash); raises AuthError (401)."""
    if not header:
        raise AuthError("this endpoint needs a bearer token", code="auth.required")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("Authorization must use the Bearer scheme", code="auth.scheme")
    m = _TOKEN_RE.match(value.strip())
    if not m:
        raise AuthError("malformed bearer token", code="auth.invalid")
    return m.group(1), hashlib.sha256(m.group(2).encode()).digest()


def check_secret(stored_hash: bytes, presented_hash: bytes) -> bool:
    return hmac.compare_digest(stored_hash, presented_hash)
