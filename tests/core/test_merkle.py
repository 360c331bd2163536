"""Merkle log maths against transparency-dev/merkle vectors, an independent oracle, and hypothesis."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from customs_gateway.core.errors import DecodeError, GatewayError
from customs_gateway.core.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    SubtreeCache,
    TreeRangeError,
    consistency_proof,
    consistency_proof_from_nodes,
    inclusion_proof,
    inclusion_proof_from_nodes,
    leaf_hash,
    node_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

ROOT_DIR = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT_DIR / "tests" / "vectors" / "merkle.json").read_text(encoding="utf-8"))
REF_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaves"]]

# A bigger tree for properties: 300 leaves, every prefix root, every perfect node.
N = 300
LEAVES = [leaf_hash(b"entry %d" % i) for i in range(N)]
ROOTS = [root_from_leaves(LEAVES[:n]) for n in range(N + 1)]
NODES: dict[tuple[int, int], bytes] = {}
CompactRange().extend(LEAVES, lambda level, index, h: NODES.__setitem__((level, index), h))


def get_node(level: int, index: int) -> bytes:
    return NODES[(level, index)]


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_audit_vectors", ROOT_DIR / "scripts" / "make_audit_vectors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def h(x: str) -> bytes:
    return bytes.fromhex(x)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- vectors ---------------------------------------------------------------------------------------


def test_vector_file_is_what_the_script_writes() -> None:
    script = load_script()
    assert script._dump(script.build_merkle()) == (ROOT_DIR / "tests/vectors/merkle.json").read_text("utf-8")


def test_hashing_primitives() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_from_leaves([]) == EMPTY_ROOT == CompactRange().root()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"L" * 32, b"R" * 32) == hashlib.sha256(b"\x01" + b"L" * 32 + b"R" * 32).digest()


def test_reference_tree_roots() -> None:
    # The three roots quoted in the brief, then all eight from verify_test.go.
    assert root_from_leaves(REF_LEAVES[:1]).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert root_from_leaves(REF_LEAVES[:4]).hex() == "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
    assert root_from_leaves(REF_LEAVES).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    for case in VECTORS["roots"]:
        assert root_from_leaves(REF_LEAVES[: case["size"]]).hex() == case["root"]


def _ids(cases: list[dict[str, Any]], *keys: str) -> list[str]:
    return [f"{'-'.join(str(c[k]) for k in keys)} {c['desc']}" for c in cases]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=_ids(VECTORS["inclusion"], "index", "size"))
def test_inclusion_vector(case: dict[str, Any]) -> None:
    leaf, proof, root = h(case["leaf_hash"]), [h(p) for p in case["proof"]], h(case["root"])
    if case["result"] == "valid":
        verify_inclusion(leaf, case["index"], case["size"], proof, root)
        if case["size"] <= len(REF_LEAVES) and REF_LEAVES[case["index"]] == leaf:
            assert inclusion_proof(REF_LEAVES, case["index"], case["size"]) == proof
    else:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, case["index"], case["size"], proof, root)


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=_ids(VECTORS["consistency"], "old_size", "new_size"))
def test_consistency_vector(case: dict[str, Any]) -> None:
    old, new = case["old_size"], case["new_size"]
    proof, r1, r2 = [h(p) for p in case["proof"]], h(case["old_root"]), h(case["new_root"])
    if case["result"] == "valid":
        verify_consistency(old, new, proof, r1, r2)
        if case["source"] != "ours" and 0 < old <= new <= len(REF_LEAVES):
            assert consistency_proof(REF_LEAVES, old, new) == proof
    else:
        with pytest.raises(ProofError):
            verify_consistency(old, new, proof, r1, r2)


def test_every_bit_of_a_proof_matters() -> None:
    proof = inclusion_proof(LEAVES, 3, 7)
    for i in range(len(proof)):
        for bit in range(256):
            bad = [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]]
            with pytest.raises(ProofError):
                verify_inclusion(LEAVES[3], 3, 7, bad, ROOTS[7])


def test_wrong_hash_lengths_are_refused() -> None:
    proof = inclusion_proof(LEAVES, 0, 2)
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0][:31], 0, 2, proof, ROOTS[2])
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0], 0, 2, [proof[0] + b"\x00"], ROOTS[2])
    with pytest.raises(ProofError):
        verify_consistency(1, 2, proof, ROOTS[1], ROOTS[2] + b"\x00")
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[0], 0, 1 << 64, [], ROOTS[1])


def test_proof_error_is_a_gateway_error() -> None:
    with pytest.raises(GatewayError) as info:
        verify_inclusion(LEAVES[0], 1, 1, [], ROOTS[1])
    assert (info.value.code, info.value.status) == ("audit.proof_invalid", 422)


@pytest.mark.parametrize(
    ("index", "size"), [(0, 0), (-1, 3), (3, 3), (0, N + 1)], ids=["empty", "negative", "index=size", "beyond"]
)
def test_inclusion_proof_out_of_range(index: int, size: int) -> None:
    with pytest.raises(TreeRangeError):
        inclusion_proof(LEAVES, index, size)


@pytest.mark.parametrize(("old", "new"), [(2, 1), (-1, 3), (0, N + 1)])
def test_consistency_proof_out_of_range(old: int, new: int) -> None:
    with pytest.raises(TreeRangeError):
        consistency_proof(LEAVES, old, new)


def test_trivial_consistency_proofs_are_empty() -> None:
    assert consistency_proof(LEAVES, 0, 5) == [] == consistency_proof(LEAVES, 5, 5)
    assert consistency_proof_from_nodes(get_node, 0, 5) == []


# --- proofs from stored nodes ----------------------------------------------------------------------


class CountingReader:
    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, level: int, index: int) -> bytes:
        self.reads += 1
        return NODES[(level, index)]


def test_node_proofs_match_reference_and_read_log_n_nodes() -> None:
    for size in [*range(1, 70), 127, 128, 129, 255, 256, 299, 300]:
        bound = 2 * size.bit_length()
        for index in sorted(i for i in {0, 1, size // 3, size // 2, size - 2, size - 1} if 0 <= i < size):
            reader = CountingReader()
            assert inclusion_proof_from_nodes(reader, index, size) == inclusion_proof(LEAVES, index, size)
            assert reader.reads <= bound
        for old in sorted(m for m in {1, 2, size // 3, size // 2, size - 1} if 0 < m <= size):
            reader = CountingReader()
            assert consistency_proof_from_nodes(reader, old, size) == consistency_proof(LEAVES, old, size)
            assert reader.reads <= bound


def test_node_proof_out_of_range() -> None:
    with pytest.raises(TreeRangeError):
        inclusion_proof_from_nodes(get_node, 5, 5)
    with pytest.raises(TreeRangeError):
        consistency_proof_from_nodes(get_node, 6, 5)


def test_subtree_cache_matches_written_nodes_and_caches() -> None:
    calls: list[tuple[int, int]] = []

    def leaf_range(start: int, end: int) -> list[bytes]:
        calls.append((start, end))
        return LEAVES[start:end]

    cache: dict[tuple[int, int], bytes] = {}
    reader = SubtreeCache(leaf_range, cache, tile_level=2)
    for size in (7, 100, 300):
        for index in (0, size // 2, size - 1):
            assert inclusion_proof_from_nodes(reader, index, size) == inclusion_proof(LEAVES, index, size)
    assert all(NODES[key] == value for key, value in cache.items())
    before = len(calls)
    inclusion_proof_from_nodes(reader, 150, 300)
    inclusion_proof_from_nodes(reader, 150, 300)
    assert len(calls) - before <= 2 * 9  # at most a few leaf reads once the big subtrees are cached


def test_subtree_cache_refuses_incomplete_subtrees() -> None:
    reader = SubtreeCache(lambda start, end: LEAVES[start : min(end, 5)])
    with pytest.raises(TreeRangeError):
        reader(3, 0)
    assert reader(2, 0) == NODES[(2, 0)]


# --- compact range ---------------------------------------------------------------------------------


def test_compact_range_root_for_every_prefix() -> None:
    rng = CompactRange()
    assert rng.root() == ROOTS[0]
    for n, leaf in enumerate(LEAVES, 1):
        rng.append(leaf)
        assert rng.size == n
        assert len(rng.hashes) == n.bit_count()
        assert rng.root() == ROOTS[n]


def test_compact_range_visits_every_node_once() -> None:
    seen: list[tuple[int, int]] = []
    CompactRange().extend(LEAVES[:37], lambda level, index, _h: seen.append((level, index)))
    assert len(seen) == len(set(seen)) == 2 * 37 - (37).bit_count()
    assert all((index + 1) << level <= 37 for level, index in seen)


def test_compact_range_bytes_round_trip_and_from_nodes() -> None:
    for size in (0, 1, 2, 7, 8, 255, 300):
        rng = CompactRange.from_nodes(get_node, size)
        assert rng.root() == ROOTS[size]
        data = rng.to_bytes()
        assert len(data) == 8 + 32 * size.bit_count()
        again = CompactRange.from_bytes(data)
        assert again == rng
        copy = again.copy()
        if size < N:
            copy.append(LEAVES[size])
            assert copy.root() == ROOTS[size + 1] and again == rng


@pytest.mark.parametrize("data", [b"", b"\x00" * 7, (3).to_bytes(8, "big") + b"\x00" * 32, (1).to_bytes(8, "big")])
def test_compact_range_from_bad_bytes(data: bytes) -> None:
    with pytest.raises(DecodeError):
        CompactRange.from_bytes(data)


def test_compact_range_constructor_and_append_check_shapes() -> None:
    with pytest.raises(ValueError):
        CompactRange(3, [b"\x00" * 32])
    with pytest.raises(ValueError):
        CompactRange(1, [b"\x00" * 31])
    with pytest.raises(ValueError):
        CompactRange(-1)
    with pytest.raises(ValueError):
        CompactRange().append(b"short")


# --- independent oracle: transparency-dev/merkle verify.go as of 2017-2021 ------------------------


def _chain_inner(seed: bytes, proof: list[bytes], index: int) -> bytes:
    for i, p in enumerate(proof):
        seed = node_hash(seed, p) if (index >> i) & 1 == 0 else node_hash(p, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: list[bytes], index: int) -> bytes:
    for i, p in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(p, seed)
    return seed


def _chain_border_right(seed: bytes, proof: list[bytes]) -> bytes:
    for p in proof:
        seed = node_hash(p, seed)
    return seed


def _decomp(index: int, size: int) -> tuple[int, int]:
    inner = (index ^ (size - 1)).bit_length()
    return inner, (index >> inner).bit_count()


def legacy_inclusion_ok(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    if not 0 <= index < size:
        return False
    inner, border = _decomp(index, size)
    if len(proof) != inner + border:
        return False
    return _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:]) == root


def legacy_consistency_ok(size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes) -> bool:
    if size1 < 1 or size2 < size1:
        return False  # the legacy code has no size1 == 0 case; callers skip it
    if size1 == size2:
        return not proof and root1 == root2
    if not proof:
        return False
    inner, border = _decomp(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    seed, start = (root1, 0) if size1 == 1 << shift else (proof[0], 1)
    if len(proof) != start + inner + border:
        return False
    rest, mask = proof[start:], (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    return hash1 == root1 and hash2 == root2


def accepts(check: Any, *args: Any) -> bool:
    try:
        check(*args)
    except ProofError:
        return False
    return True


# --- properties ------------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=N)


@cache
def ref_inclusion(index: int, size: int) -> list[bytes]:
    return inclusion_proof(LEAVES, index, size)


@cache
def ref_consistency(old: int, new: int) -> list[bytes]:
    return consistency_proof(LEAVES, old, new)


@settings(max_examples=300, deadline=None)
@given(size=sizes, data=st.data())
def test_every_inclusion_proof_verifies_and_every_flip_fails(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = ref_inclusion(index, size)
    verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size])
    assert inclusion_proof_from_nodes(get_node, index, size) == proof
    bit = data.draw(st.integers(0, 255), label="bit")
    with pytest.raises(ProofError):
        verify_inclusion(LEAVES[index], index, size, proof, flip(ROOTS[size], bit))
    with pytest.raises(ProofError):
        verify_inclusion(flip(LEAVES[index], bit), index, size, proof, ROOTS[size])
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        with pytest.raises(ProofError):
            verify_inclusion(
                LEAVES[index], index, size, [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]], ROOTS[size]
            )


@settings(max_examples=300, deadline=None)
@given(new=sizes, data=st.data())
def test_every_consistency_proof_verifies_and_every_flip_fails(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new), label="old")
    proof = ref_consistency(old, new)
    verify_consistency(old, new, proof, ROOTS[old], ROOTS[new])
    verify_consistency(0, new, [], ROOTS[0], ROOTS[new])
    assert consistency_proof_from_nodes(get_node, old, new) == proof
    bit = data.draw(st.integers(0, 255), label="bit")
    with pytest.raises(ProofError):
        verify_consistency(old, new, proof, flip(ROOTS[old], bit), ROOTS[new])
    with pytest.raises(ProofError):
        verify_consistency(old, new, proof, ROOTS[old], flip(ROOTS[new], bit))
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        with pytest.raises(ProofError):
            verify_consistency(old, new, [*proof[:i], flip(proof[i], bit), *proof[i + 1 :]], ROOTS[old], ROOTS[new])


def _mutate(proof: list[bytes], data: st.DataObject) -> list[bytes]:
    kind = data.draw(st.sampled_from(["keep", "drop", "extend", "prepend", "swap"]), label="mutation")
    if kind == "drop" and proof:
        return proof[:-1]
    if kind == "extend":
        return [*proof, ROOTS[1]]
    if kind == "prepend":
        return [ROOTS[1], *proof]
    if kind == "swap" and len(proof) > 1:
        return [proof[1], proof[0], *proof[2:]]
    return proof


@settings(max_examples=300, deadline=None)
@given(size=sizes, data=st.data())
def test_inclusion_verifier_agrees_with_legacy_oracle(size: int, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, size - 1), label="index")
    claimed_index = data.draw(st.sampled_from([index, index + 1, index - 1, index ^ 2, size]), label="claim")
    claimed_size = data.draw(st.sampled_from([size, size + 1, size - 1, size * 2, size // 2]), label="size")
    proof = _mutate(ref_inclusion(index, size), data)
    args = (LEAVES[index], claimed_index, claimed_size, proof, ROOTS[size])
    assert accepts(verify_inclusion, *args) == legacy_inclusion_ok(*args)


@settings(max_examples=300, deadline=None)
@given(new=st.integers(2, N), data=st.data())
def test_consistency_verifier_agrees_with_legacy_oracle(new: int, data: st.DataObject) -> None:
    old = data.draw(st.integers(1, new), label="old")
    claimed_old = data.draw(st.sampled_from([old, old + 1, old - 1, old ^ 2]).filter(lambda s: s >= 1), label="o")
    claimed_new = data.draw(st.sampled_from([new, new + 1, new - 1, new * 2, new // 2]), label="new")
    proof = _mutate(ref_consistency(old, new), data)
    root1 = ROOTS[claimed_old] if claimed_old <= N and data.draw(st.booleans(), label="honest") else ROOTS[old]
    args = (claimed_old, claimed_new, proof, root1, ROOTS[new])
    assert accepts(verify_consistency, *args) == legacy_consistency_ok(*args)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=70), st.data())
def test_compact_range_serialised_midway_keeps_its_root(entries: list[bytes], data: st.DataObject) -> None:
    hashes = [leaf_hash(e) for e in entries]
    cut = data.draw(st.integers(0, len(hashes)), label="cut")
    first = CompactRange()
    first.extend(hashes[:cut])
    resumed = CompactRange.from_bytes(first.to_bytes())
    resumed.extend(hashes[cut:])
    assert resumed.root() == root_from_leaves(hashes)
