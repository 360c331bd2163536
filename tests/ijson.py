"""Signed JSON that reads two ways: a member written twice (I-JSON, RFC 7493 §2.3)."""

from __future__ import annotations


def twice(data: bytes, pair: bytes) -> bytes:
    """`data` with the member `pair` (e.g. b'"n":1') written twice, the second time right after."""
    assert data.count(pair) == 1, (pair, data)
    return data.replace(pair, pair + b"," + pair)
