"""The file rows' load generator checks what it downloads byte for byte (bench.benchmark_files)."""

from __future__ import annotations

import hashlib

import pytest

from customs_gateway.bench import benchmark_files as bf

SIZE = 3 * bf.MIB + 5
DATA = b"".join(bf.file_block(i) for i in range(4))[:SIZE]


def test_the_digest_worked_out_beforehand_is_the_files() -> None:
    assert bf.file_digest(SIZE) == hashlib.sha256(DATA).hexdigest()


@pytest.mark.parametrize("step", [1000, 70_000, bf.MIB, SIZE])
def test_the_file_itself_compares_equal_in_any_pieces(step: int) -> None:
    c = bf._Compare(SIZE)
    for k in range(0, SIZE, step):
        c.feed(DATA[k : k + step])
    assert c.at == SIZE and c.same


@pytest.mark.parametrize("change", ["flip", "longer", "other_block"])
def test_any_other_bytes_do_not(change: str) -> None:
    data = bytearray(DATA)
    if change == "flip":
        data[2 * bf.MIB + 7] ^= 1
    elif change == "longer":
        data += b"x"
    else:
        data[: bf.MIB] = bf.file_block(9)
    c = bf._Compare(SIZE)
    for k in range(0, len(data), 70_000):
        c.feed(bytes(data[k : k + 70_000]))
    assert not c.same
