"""Day keys on disk: `keys/days/<YYYY-MM-DD>.key`, one per retention day (`core.atrest`).

Each file holds one random day key wrapped under the store key's wrap subkey (mode 0600, written
atomically, and only if absent, so processes sharing the directory — PostgreSQL replicas — agree
on each day's key). Destroying a day replaces its file with a tombstone `<YYYY-MM-DD>.destroyed` (the
key bytes are gone; the tombstone keeps the day from ever getting a new key, so nothing can be
sealed for a day already disposed of). Thread-safe: the store's writer thread seals through it.

A message under legal hold is sealed under its hold's own key instead (`core.atrest`, version 2),
kept beside the day keys in `keys/holds/<hold id hex>.key`, wrapped the same way; the key is
deleted once the hold is released and the message disposed of.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from pathlib import Path
from typing import Final

from ..core import atrest
from ..core.keys import RandBytes
from ..core.storekey import StoreKey
from .keystore import create_exclusive, fsync_dir, write_atomic

DAYS_DIR: Final = "days"
HOLDS_DIR: Final = "holds"
_NAME: Final = re.compile(r"(\d{4}-\d{2}-\d{2})\.(key|destroyed)")
_HOLD_NAME: Final = re.compile(r"([0-9a-f]{32})\.key")


class DayKeys:
    def __init__(self, directory: Path, store_key: StoreKey, randbytes: RandBytes = os.urandom) -> None:
        self.directory = directory
        self.holds_directory = directory.parent / HOLDS_DIR
        self._wrap = store_key.derive(atrest.WRAP_KEY_LABEL)
        self._randbytes = randbytes
        self._cache: dict[dt.date, bytes] = {}
        self._holds: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    def _path(self, day: dt.date, kind: str = "key") -> Path:
        return self.directory / f"{day.isoformat()}.{kind}"

    def key_for(self, day: dt.date) -> bytes:
        """The key of `day`, made now if the day has none yet; Disposed for a destroyed day."""
        with self._lock:
            key = self._load(day)
            if key is None:
                if self._path(day, "destroyed").exists():
                    raise atrest.Disposed(f"the day key of {day.isoformat()} was destroyed", field="retain_until")
                key = self._randbytes(atrest.KEY_BYTES)
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                nonce = self._randbytes(atrest.NONCE_BYTES)
                # Created only if absent: replicas sharing the directory never replace a key
                # another one already sealed with (the one that lost the race loads the winner's).
                if create_exclusive(self._path(day), atrest.wrap_day_key(self._wrap, day, key, nonce)):
                    self._cache[day] = key
                else:
                    key = self._load(day)
                    if key is None:
                        raise atrest.Disposed(f"the day key of {day.isoformat()} was destroyed", field="retain_until")
            return key

    def existing(self, day: dt.date) -> bytes:
        """The key of `day`; Disposed if it was destroyed or never made."""
        with self._lock:
            key = self._load(day)
        if key is None:
            raise atrest.Disposed(f"the day key of {day.isoformat()} no longer exists")
        return key

    def _load(self, day: dt.date) -> bytes | None:
        key = self._cache.get(day)
        if key is None:
            try:
                data = self._path(day).read_bytes()
            except FileNotFoundError:
                return None
            key = self._cache[day] = atrest.unwrap_day_key(self._wrap, day, data)
        return key

    def destroy(self, day: dt.date) -> bool:
        """Destroy the key of `day` for good; False if there was none. The tombstone is written
        before the key file goes, so a crash in between leaves a day that is disposed, not one
        that a later `key_for` could give a fresh key."""
        with self._lock:
            path = self._path(day)
            if not path.exists():
                return False
            write_atomic(self._path(day, "destroyed"), b"")
            path.unlink()
            fsync_dir(self.directory)
            self._cache.pop(day, None)
            return True

    def days(self) -> list[dt.date]:
        """The days that hold a key, oldest first."""
        if not self.directory.is_dir():
            return []
        found = (_NAME.fullmatch(p.name) for p in self.directory.iterdir())
        return sorted(dt.date.fromisoformat(m.group(1)) for m in found if m and m.group(2) == "key")

    def seal(self, day: dt.date, context: bytes, plaintext: bytes) -> bytes:
        return atrest.seal(self.key_for(day), day, context, plaintext, self._randbytes(atrest.NONCE_BYTES))

    def open(self, context: bytes, blob: bytes) -> bytes:
        ref = atrest.sealed_ref(blob)
        key = self.existing(ref) if isinstance(ref, dt.date) else self.hold_key(ref)
        return atrest.open_sealed(key, context, blob)

    # --- legal holds ---------------------------------------------------------------------
    def _hold_path(self, hold_id: bytes) -> Path:
        return self.holds_directory / f"{hold_id.hex()}.key"

    def new_hold(self) -> bytes:
        """A new hold id with its own random key, kept wrapped on disk before it is returned."""
        hold_id = self._randbytes(atrest.HOLD_ID_BYTES)
        key = self._randbytes(atrest.KEY_BYTES)
        self.holds_directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        wrapped = atrest.wrap_hold_key(self._wrap, hold_id, key, self._randbytes(atrest.NONCE_BYTES))
        if not create_exclusive(self._hold_path(hold_id), wrapped):
            raise atrest.AtRestError(f"hold key {hold_id.hex()} exists already", code="atrest.hold_exists")
        with self._lock:
            self._holds[hold_id] = key
        return hold_id

    def hold_key(self, hold_id: bytes) -> bytes:
        """The key of hold `hold_id`; Disposed once it was destroyed."""
        with self._lock:
            key = self._holds.get(hold_id)
            if key is None:
                try:
                    data = self._hold_path(hold_id).read_bytes()
                except FileNotFoundError:
                    raise atrest.Disposed(f"the key of hold {hold_id.hex()} no longer exists") from None
                key = self._holds[hold_id] = atrest.unwrap_hold_key(self._wrap, hold_id, data)
            return key

    def seal_held(self, hold_id: bytes, context: bytes, plaintext: bytes) -> bytes:
        return atrest.seal_hold(
            self.hold_key(hold_id), hold_id, context, plaintext, self._randbytes(atrest.NONCE_BYTES)
        )

    def destroy_hold(self, hold_id: bytes) -> bool:
        """Destroy the key of hold `hold_id` for good (its message was disposed of); False if
        there was none."""
        with self._lock:
            self._holds.pop(hold_id, None)
            try:
                self._hold_path(hold_id).unlink()
            except FileNotFoundError:
                return False
            fsync_dir(self.holds_directory)
            return True

    def holds(self) -> list[bytes]:
        """The ids of the holds whose key exists."""
        if not self.holds_directory.is_dir():
            return []
        found = (_HOLD_NAME.fullmatch(p.name) for p in self.holds_directory.iterdir())
        return sorted(bytes.fromhex(m.group(1)) for m in found if m)
