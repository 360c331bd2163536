"""The store key: one gateway's local secret for what it keeps about its own data.

A random 32-byte key, kept in the key store like the private keys (argon2id + XChaCha20-Poly1305
under the passphrase, file `keys/<kid>.key`, use `store`), never sent to the peer and never in
the database. Subkeys are derived with HKDF-SHA256 under a label per purpose, so one purpose's key
says nothing about another's: today the reference index (`core.reference`); data keys at rest
derive from it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .keys import RandBytes

USE_STORE: Final = "store"
ALG_STORE: Final = "hkdf-sha256"
KEY_BYTES: Final = 32


@dataclass(frozen=True)
class StoreKey:
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a store key is 32 bytes")

    @classmethod
    def generate(cls, randbytes: RandBytes) -> StoreKey:
        return cls(randbytes(KEY_BYTES))

    @property
    def seed(self) -> bytes:
        """The secret as the key store seals it."""
        return self.secret

    @property
    def kid(self) -> str:
        """A name for the key file that reveals nothing of the secret (a labelled hash)."""
        return "store-" + hashlib.sha256(b"customs-gateway/v1 store key id\x00" + self.secret).hexdigest()[:24]

    def derive(self, label: str) -> bytes:
        """The 32-byte subkey for one purpose (HKDF-SHA256, no salt, `label` as info)."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=label.encode("ascii"))
        return hkdf.derive(self.secret)
