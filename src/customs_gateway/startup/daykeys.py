"""Day keys on disk: `keys/days/<YYYY-MM-DD>.key`, one per retention day (`core.atrest`).

Each file holds one random day key wrapped under the store key's wrap subkey (mode 0600, written
atomically, and only if absent, so processes sharing the directory — PostgreSQL replicas — agree
on each day's key). Destroying a day replaces its file with a tombstone `<YYYY-MM-DD>.destroyed` (the
key bytes are gone; the tombstone keeps the day from ever getting a new key, so nothing can be
sealed for a day already disposed of). Thread-safe: the store's writer thread seals through it.
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
from .keystore import create_exclusive, write_atomic

DAYS_DIR: Final = "days"
_NAME: Final = re.compile(r"(\d{4}-\d{2}-\d{2})\.(key|destroyed)")


class DayKeys:
    def __init__(self, directory: Path, store_key: StoreKey, randbytes: RandBytes = os.urandom) -> None:
        self.directory = directory
        self._wrap = store_key.derive(atrest.WRAP_KEY_LABEL)
        self._randbytes = randbytes
        self._cache: dict[dt.date, bytes] = {}
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
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
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
        return atrest.open_sealed(self.existing(atrest.sealed_day(blob)), context, blob)
