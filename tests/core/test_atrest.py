"""core.atrest and startup.daykeys: data sealed under a key per retention day (issue 18). The
vectors are recomputed byte for byte; every way a sealed value or a wrapped day key can be moved,
changed or opened with the wrong key is refused; a destroyed day stays unreadable for good."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.core import atrest
from customs_gateway.core.storekey import StoreKey
from customs_gateway.startup.daykeys import DayKeys

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "atrest.json").read_text(encoding="utf-8"))
VALID = [t for t in V["tests"] if t["result"] == "valid"]
INVALID = [t for t in V["tests"] if t["result"] == "invalid"]
DAY = dt.date(2031, 3, 1)
KEY = bytes(range(32))
NONCE = bytes(24)


def test_wrap_key_is_the_labelled_subkey_of_the_store_key() -> None:
    store = StoreKey(bytes.fromhex(V["store_key"]))
    assert store.derive(V["wrap_key_label"]).hex() == V["wrap_key"]


@pytest.mark.parametrize("tc", VALID, ids=lambda t: str(t["tcId"]))
def test_sealed_vector(tc: dict[str, Any]) -> None:
    day = dt.date.fromisoformat(tc["day"])
    key, ctx = bytes.fromhex(tc["day_key"]), bytes.fromhex(tc["context_hex"])
    blob = atrest.seal(key, day, ctx, tc["plaintext"].encode(), bytes.fromhex(tc["nonce"]))
    assert blob.hex() == tc["sealed"]
    assert atrest.day_number(day) == tc["day_number"] and blob[1:5] == tc["day_number"].to_bytes(4, "big")
    assert atrest.sealed_day(blob) == day
    assert atrest.open_sealed(key, ctx, blob) == tc["plaintext"].encode()


@pytest.mark.parametrize("tc", INVALID, ids=lambda t: str(t["tcId"]))
def test_sealed_vector_refused(tc: dict[str, Any]) -> None:
    key = bytes.fromhex(VALID[0]["day_key"])
    with pytest.raises(atrest.AtRestError) as e:
        atrest.open_sealed(key, bytes.fromhex(tc["context_hex"]), bytes.fromhex(tc["sealed"]))
    assert e.value.code == tc["code"], tc["comment"]


def test_wrapped_day_key_vectors() -> None:
    wrap = bytes.fromhex(V["wrap_key"])
    good, other_store, renamed = V["wrapped_day_keys"]
    assert (
        atrest.unwrap_day_key(wrap, dt.date.fromisoformat(good["day"]), good["file"].encode()).hex()
        == (VALID[0]["day_key"])
    )
    with pytest.raises(atrest.AtRestError) as e:
        atrest.unwrap_day_key(bytes.fromhex(other_store["wrap_key"]), DAY, other_store["file"].encode())
    assert e.value.code == other_store["code"]
    with pytest.raises(atrest.AtRestError) as e:
        atrest.unwrap_day_key(wrap, dt.date.fromisoformat(renamed["day"]), renamed["file"].encode())
    assert e.value.code == renamed["code"]
    doc = json.loads(good["file"])
    for change in ({"day": "2031-03-02"}, {"format": "x"}, {"nonce": "AAAA"}, {"ciphertext": "!!"}):
        with pytest.raises(atrest.AtRestError):
            atrest.unwrap_day_key(wrap, DAY, json.dumps({**doc, **change}).encode())
    with pytest.raises(atrest.AtRestError):
        atrest.unwrap_day_key(wrap, DAY, b"not json")


def test_a_wrong_day_key_and_a_reordered_header_are_refused() -> None:
    blob = atrest.seal(KEY, DAY, b"ctx", b"secret", NONCE)
    with pytest.raises(atrest.AtRestError):
        atrest.open_sealed(bytes(32), b"ctx", blob)
    swapped = blob[:1] + blob[5:9] + blob[1:5] + blob[9:]  # day and nonce bytes exchanged
    with pytest.raises(atrest.AtRestError):
        atrest.open_sealed(KEY, b"ctx", swapped)
    with pytest.raises(ValueError):
        atrest.seal(KEY[:16], DAY, b"ctx", b"x", NONCE)


@given(st.binary(max_size=4096), st.binary(max_size=80), st.dates(dt.date(1970, 1, 1), dt.date(9999, 12, 31)))
def test_round_trip_and_overhead(plaintext: bytes, context: bytes, day: dt.date) -> None:
    blob = atrest.seal(KEY, day, context, plaintext, NONCE)
    assert len(blob) == len(plaintext) + atrest.HEADER_BYTES + atrest.TAG_BYTES
    assert atrest.sealed_day(blob) == day
    assert atrest.open_sealed(KEY, context, blob) == plaintext


# --- day keys on disk ----------------------------------------------------------------------------


class Counter:
    """Deterministic randomness for the key store under test."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return (self.n.to_bytes(4, "big") * size)[:size]


def test_day_keys_are_made_once_kept_0600_and_reopen(tmp_path: Path) -> None:
    store = StoreKey(bytes(range(32)))
    keys = DayKeys(tmp_path / "days", store, Counter())
    blob = keys.seal(DAY, b"inbox.body\x00m1", b"seizure of brake pads")
    path = tmp_path / "days" / "2031-03-01.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.days() == [DAY]
    assert keys.key_for(DAY) == keys.key_for(DAY)
    again = DayKeys(tmp_path / "days", store)  # a restart reads the key back
    assert again.open(b"inbox.body\x00m1", blob) == b"seizure of brake pads"
    assert bytes(range(32)).hex() not in path.read_text()
    other = DayKeys(tmp_path / "days", StoreKey(bytes(32)))  # another store key cannot unwrap it
    with pytest.raises(atrest.AtRestError) as e:
        other.open(b"inbox.body\x00m1", blob)
    assert e.value.code == "atrest.auth_failed"


def test_a_destroyed_day_is_unreadable_and_never_gets_a_new_key(tmp_path: Path) -> None:
    store = StoreKey(bytes(range(32)))
    keys = DayKeys(tmp_path / "days", store, Counter())
    later = DAY + dt.timedelta(days=1)
    old = keys.seal(DAY, b"c", b"disposed at retain_until")
    kept = keys.seal(later, b"c", b"kept one more day")
    assert keys.destroy(DAY) is True
    assert keys.destroy(DAY) is False
    for reader in (keys, DayKeys(tmp_path / "days", store)):
        with pytest.raises(atrest.Disposed) as e:
            reader.open(b"c", old)
        assert e.value.code == "atrest.disposed"
        with pytest.raises(atrest.Disposed):
            reader.key_for(DAY)
        assert reader.open(b"c", kept) == b"kept one more day"
    assert keys.days() == [later]
    assert not (tmp_path / "days" / "2031-03-01.key").exists()
    with pytest.raises(atrest.Disposed):
        DayKeys(tmp_path / "days", store).existing(dt.date(2040, 1, 1))  # never made


# --- legal holds ---------------------------------------------------------------------------------

HOLDS = V["holds"]


def test_hold_vectors() -> None:
    good = HOLDS[0]
    key, hold_id, ctx = (
        bytes.fromhex(good["hold_key"]),
        bytes.fromhex(good["hold_id"]),
        bytes.fromhex(good["context_hex"]),
    )
    blob = atrest.seal_hold(key, hold_id, ctx, good["plaintext"].encode(), bytes.fromhex(good["nonce"]))
    assert blob.hex() == good["sealed"]
    assert atrest.sealed_ref(blob) == hold_id
    assert atrest.open_sealed(key, ctx, blob) == good["plaintext"].encode()
    wrap = bytes.fromhex(V["wrap_key"])
    assert atrest.unwrap_hold_key(wrap, hold_id, good["wrapped"].encode()) == key
    day_key = bytes.fromhex(VALID[0]["day_key"])
    for tc, opener in ((HOLDS[1], key), (HOLDS[2], day_key)):
        with pytest.raises(atrest.AtRestError) as e:
            atrest.open_sealed(opener, ctx, bytes.fromhex(tc["sealed"]))
        assert e.value.code == tc["code"], tc["comment"]
    with pytest.raises(atrest.AtRestError) as e:
        atrest.unwrap_hold_key(wrap, bytes(16), good["wrapped"].encode())
    assert e.value.code == HOLDS[3]["code"]
    with pytest.raises(atrest.AtRestError):
        atrest.sealed_day(blob)  # a held value names no day


def test_a_held_value_opens_until_its_hold_key_is_destroyed(tmp_path: Path) -> None:
    store = StoreKey(bytes(range(32)))
    keys = DayKeys(tmp_path / "days", store, Counter())
    ordinary = keys.seal(DAY, b"c", b"disposed with its day")
    hold_id = keys.new_hold()
    held = keys.seal_held(hold_id, b"c", b"kept for the court")
    assert keys.holds() == [hold_id]
    path = tmp_path / "holds" / f"{hold_id.hex()}.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.destroy(DAY) is True  # the day goes on time; the held value does not depend on it
    restarted = DayKeys(tmp_path / "days", store)
    assert restarted.open(b"c", held) == b"kept for the court"
    with pytest.raises(atrest.Disposed):
        restarted.open(b"c", ordinary)
    with pytest.raises(atrest.AtRestError):
        restarted.open(b"d", held)  # moved to another row or column
    assert keys.destroy_hold(hold_id) is True
    assert keys.destroy_hold(hold_id) is False
    for reader in (keys, DayKeys(tmp_path / "days", store)):
        with pytest.raises(atrest.Disposed):
            reader.open(b"c", held)
    assert keys.holds() == []
