"""The Merkle log maths: RFC 6962/9162 hashing, proof generation and verification, compact ranges.

Pure functions over 32-byte SHA-256 hashes; no storage. Verification follows transparency-dev/merkle
`proof/verify.go` (index < size, exact proof length, the size1 == size2 and size1 == 0 cases); where
the copy we worked from was wrong, the fix is noted on the spot. Proof generation is written once
over a `range_root(start, end)` callable, so the same code serves a plain list of leaf hashes
(reference, O(n)) and a store that keeps perfect-subtree roots (`NodeReader`, O(log n) reads per
proof). `CompactRange` is the O(log n) frontier a writer persists to append and compute roots
without reading the tree.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, MutableMapping, Sequence

from .errors import DecodeError, GatewayError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
MAX_TREE_SIZE = (1 << 64) - 1  # sizes and indexes are uint64 on the wire, as in verify.go

NodeReader = Callable[[int, int], bytes]
"""`get_node(level, index)`: root of the perfect subtree over leaves [index·2^level, (index+1)·2^level).

Level 0 is the leaf hash itself. Only complete subtrees are ever asked for; once complete, a node
never changes (the log is append-only), so a store may cache or persist every one it sees.
"""

NodeVisitor = Callable[[int, int, bytes], None]
"""Called as `visit(level, index, hash)` for every perfect-subtree node that an append completes."""


class ProofError(GatewayError):
    """An inclusion or consistency proof does not verify (wrong length, wrong root, bad sizes)."""

    code = "audit.proof_invalid"
    status = 422


class TreeRangeError(GatewayError):
    """A proof was requested for an index or tree size the log does not have."""

    code = "audit.range_invalid"
    status = 400


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 ‖ data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly below n (n > 1): the RFC's k."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[0:n]) of the given leaf hashes (RFC 9162 §2.1.1); `EMPTY_ROOT` for none."""
    if not leaf_hashes:
        return EMPTY_ROOT
    # Pairwise reduction level by level; an odd last node is promoted unchanged, which yields
    # exactly the RFC's left-heavy split.
    level = list(leaf_hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# --- proof generation ---------------------------------------------------------------------------

RangeRoot = Callable[[int, int], bytes]


def _inclusion_path(range_root: RangeRoot, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), iteratively; deepest sibling first."""
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(range_root(start + k, end))
            end = start + k
        else:
            proof.append(range_root(start, start + k))
            start += k
    proof.reverse()
    return proof


def _consistency_path(range_root: RangeRoot, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 SUBPROOF(old_size, D[0:new_size], true), iteratively; deepest first."""
    proof: list[bytes] = []
    start, end, whole = 0, new_size, True
    while old_size != end:
        k = _split(end - start)
        if old_size - start <= k:
            proof.append(range_root(start + k, end))
            end = start + k
        else:
            proof.append(range_root(start, start + k))
            start += k
            whole = False
    if not whole:
        proof.append(range_root(start, end))
    proof.reverse()
    return proof


def _check_size(name: str, value: int, limit: int) -> None:
    if not 0 <= value <= limit:
        raise TreeRangeError(f"{name} {value} outside 0..{limit}", field=name)


def _list_range_root(leaf_hashes: Sequence[bytes]) -> RangeRoot:
    return lambda start, end: root_from_leaves(leaf_hashes[start:end])


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Reference inclusion proof for leaf `index` in the tree of the first `size` leaf hashes.

    O(size) hashing; for tests and small exports. Raises TreeRangeError unless 0 <= index < size
    <= len(leaf_hashes).
    """
    _check_size("size", size, len(leaf_hashes))
    if not 0 <= index < size:
        raise TreeRangeError(f"index {index} out of range for size {size}", field="index")
    return _inclusion_path(_list_range_root(leaf_hashes), index, size)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Reference consistency proof from `old_size` to `new_size` over the given leaf hashes.

    Empty when old_size is 0 or equals new_size. Raises TreeRangeError unless
    0 <= old_size <= new_size <= len(leaf_hashes).
    """
    _check_size("new_size", new_size, len(leaf_hashes))
    _check_size("old_size", old_size, new_size)
    if old_size in (0, new_size):
        return []
    return _consistency_path(_list_range_root(leaf_hashes), old_size, new_size)


def _node_range_root(get_node: NodeReader) -> RangeRoot:
    def range_root(start: int, end: int) -> bytes:
        # Every range a proof asks for starts on a multiple of the power of two that covers it,
        # so it splits into perfect subtrees of decreasing size, folded right to left.
        pieces: list[bytes] = []
        pos = start
        for level in range((end - start).bit_length() - 1, -1, -1):
            if (end - start) >> level & 1:
                pieces.append(get_node(level, pos >> level))
                pos += 1 << level
        root = pieces[-1]
        for h in reversed(pieces[:-1]):
            root = node_hash(h, root)
        return root

    return range_root


def inclusion_proof_from_nodes(get_node: NodeReader, index: int, size: int) -> list[bytes]:
    """Inclusion proof for leaf `index` in the tree of `size`, from perfect-subtree roots.

    Reads at most 2·bit_length(size) nodes. Raises TreeRangeError unless 0 <= index < size.
    """
    _check_size("size", size, MAX_TREE_SIZE)
    if not 0 <= index < size:
        raise TreeRangeError(f"index {index} out of range for size {size}", field="index")
    return _inclusion_path(_node_range_root(get_node), index, size)


def consistency_proof_from_nodes(get_node: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof from `old_size` to `new_size`, from perfect-subtree roots (O(log n) reads).

    Raises TreeRangeError unless 0 <= old_size <= new_size.
    """
    _check_size("new_size", new_size, MAX_TREE_SIZE)
    _check_size("old_size", old_size, new_size)
    if old_size in (0, new_size):
        return []
    return _consistency_path(_node_range_root(get_node), old_size, new_size)


class SubtreeCache:
    """A `NodeReader` over stored leaf hashes that remembers every perfect-subtree root it computes.

    `leaf_range(start, end)` returns the stored leaf hashes [start, end). Subtrees up to
    2^tile_level leaves are hashed from one leaf read; larger ones from their two cached halves,
    so after the first proof each further one costs O(log n) cache hits. `cache` may be any
    mapping (a dict, an LRU, a table): completed subtrees never change, so entries never expire.
    """

    def __init__(
        self,
        leaf_range: Callable[[int, int], Sequence[bytes]],
        cache: MutableMapping[tuple[int, int], bytes] | None = None,
        *,
        tile_level: int = 8,
    ) -> None:
        self._leaf_range = leaf_range
        self._cache: MutableMapping[tuple[int, int], bytes] = {} if cache is None else cache
        self._tile_level = tile_level

    def __call__(self, level: int, index: int) -> bytes:
        key = (level, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if level <= self._tile_level:
            leaves = self._leaf_range(index << level, (index + 1) << level)
            if len(leaves) != 1 << level:
                raise TreeRangeError(f"subtree ({level}, {index}) is not complete", field="size")
            value = root_from_leaves(leaves)
        else:
            value = node_hash(self(level - 1, 2 * index), self(level - 1, 2 * index + 1))
        self._cache[key] = value
        return value


# --- verification (transparency-dev/merkle proof/verify.go) -------------------------------------


def _check_hash(name: str, value: bytes) -> None:
    # verify.go leaves hash sizes to the hasher. Refusing other lengths up front turns a certain
    # root mismatch into a clearer refusal; the one behaviour change is that a consistency check
    # from size 0, where verify.go ignores both roots, still wants them well formed.
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} must be {HASH_SIZE} bytes, got {len(value)}", field=name)


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(f"proof[{i}]", h)


def _match(size: int, computed: bytes, expected: bytes) -> None:
    if not hmac.compare_digest(computed, expected):
        raise ProofError(
            f"root hash at size {size} mismatched: computed {computed.hex()}, expected {expected.hex()}",
            field="root",
        )


def _fork(index: int, level: int, size: int) -> tuple[int, int, int]:
    """Shape of a proof for node (level, index) in a tree of `size`: (inner, right, left) counts."""
    # The fork is where the path from (level, index) leaves the path to leaf `size`; its right
    # sibling, if any, is the one ephemeral (incomplete) node the proof carries.
    inner = (index ^ (size >> level)).bit_length() - 1
    fork_level, fork_index = level + inner, index >> inner
    begin, end = fork_index << fork_level, (fork_index + 1) << fork_level
    right = 0 if end == size else 1
    return inner, right, begin.bit_count()  # begin.bit_count() is compact.RangeSize(0, begin)


def _verify(index: int, level: int, size: int, *, seed: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """verify.go `verify`: chain `seed` at node (level, index) up to the root of a tree of `size`."""
    inner, right, left = _fork(index, level, size)
    h = seed
    if len(proof) != inner + right + left:
        raise ProofError(f"incorrect proof size: {len(proof)}, want {inner + right + left}", field="proof")

    node = index
    for p in proof[:inner]:
        h = node_hash(h, p) if node & 1 == 0 else node_hash(p, h)
        node >>= 1
    if right:
        h = node_hash(h, proof[inner])
    for p in proof[inner + right :]:
        h = node_hash(p, h)
    _match(size, h, root)


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf` (a leaf hash) is at `index` in the tree of `size` with `root`.

    Requires 0 <= index < size and a proof of exactly the right length. Raises ProofError.
    """
    if not 0 <= index < size <= MAX_TREE_SIZE:
        raise ProofError(f"index {index} out of range for size {size}", field="index")
    _check_hash("leaf_hash", leaf)
    _check_hash("root", root)
    _check_proof(proof)
    _verify(index, 0, size, seed=leaf, proof=proof, root=root)


def verify_consistency(old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """Check that the tree of `new_size`/`new_root` extends the tree of `old_size`/`old_root`.

    As verify.go: equal sizes need an empty proof and equal roots; from size 0 any tree is
    consistent with an empty proof. Raises ProofError.
    """
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise ProofError(f"tree size {old_size} > {new_size}", field="old_size")
    _check_hash("old_root", old_root)
    _check_hash("new_root", new_root)
    _check_proof(proof)
    if old_size in (0, new_size) and proof:
        raise ProofError(f"incorrect proof size: got {len(proof)}, want 0", field="proof")
    if old_size == new_size:
        _match(old_size, old_root, new_root)
        return
    if old_size == 0:
        return

    # The largest perfect subtree that ends at old_size: its root is proof[0], unless old_size is
    # itself a power of two, when it is old_root and the verifier already has it.
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    if index == 0:
        _verify(index, level, new_size, seed=old_root, proof=proof, root=new_root)
        return

    # Otherwise proof[0] is that subtree's root and the rest is its inclusion proof in new_size.
    # (The stored copy of verify.go we read gets two details wrong here: its up-front length
    # formula 1+Len64(size2-1)-level over-counts e.g. (5, 6), and its old-root rebuild chains
    # the ephemeral node; it rejects its own (6, 7) vector. Both are fixed from the fork shape.)
    inner, right, left = _fork(index, level, new_size)
    if len(proof) != 1 + inner + right + left:
        raise ProofError(f"incorrect proof size: {len(proof)}, want {1 + inner + right + left}", field="proof")
    _verify(index, level, new_size, seed=proof[0], proof=proof[1:], root=new_root)

    # Rebuild old_root from the same hashes: only left siblings on the path count, and the
    # ephemeral node lies wholly beyond old_size.
    h = proof[0]
    for i, p in enumerate(proof[1 : 1 + inner]):
        if (index >> i) & 1:
            h = node_hash(p, h)
    for p in proof[1 + inner + right :]:
        h = node_hash(p, h)
    _match(old_size, h, old_root)


# --- compact range ------------------------------------------------------------------------------


class CompactRange:
    """The frontier of a log: roots of the perfect subtrees covering leaves [0, size), largest first.

    Holds popcount(size) hashes, so appending and computing the root need no tree reads. A
    writer persists `to_bytes()` beside the leaves and passes a `visit` callback to `append` to
    store each completed node for `inclusion_proof_from_nodes`.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        hs = list(hashes)
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ValueError(f"size {size} outside 0..{MAX_TREE_SIZE}")
        if len(hs) != size.bit_count():
            raise ValueError(f"size {size} needs {size.bit_count()} hashes, got {len(hs)}")
        if any(len(h) != HASH_SIZE for h in hs):
            raise ValueError(f"compact range hashes must be {HASH_SIZE} bytes")
        self._size = size
        self._hashes = hs

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    @classmethod
    def from_nodes(cls, get_node: NodeReader, size: int) -> CompactRange:
        """The frontier at any past or present `size`, from popcount(size) node reads."""
        hashes: list[bytes] = []
        pos = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(get_node(level, pos >> level))
                pos += 1 << level
        return cls(size, hashes)

    def append(self, leaf: bytes, visit: NodeVisitor | None = None) -> None:
        """Add one leaf hash; calls `visit` for the leaf and each perfect node it completes."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        index, level, h = self._size, 0, leaf
        if visit is not None:
            visit(0, index, h)
        # Each trailing 1-bit of the old size is a same-sized subtree on the left to merge with.
        pending = self._size
        while pending & 1:
            h = node_hash(self._hashes.pop(), h)
            level += 1
            index >>= 1
            pending >>= 1
            if visit is not None:
                visit(level, index, h)
        self._hashes.append(h)
        self._size += 1

    def extend(self, leaves: Iterable[bytes], visit: NodeVisitor | None = None) -> None:
        """Append each leaf hash in order."""
        for leaf in leaves:
            self.append(leaf, visit)

    def root(self) -> bytes:
        """MTH of the leaves [0, size); `EMPTY_ROOT` when empty."""
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for h in reversed(self._hashes[:-1]):
            root = node_hash(h, root)
        return root

    def copy(self) -> CompactRange:
        return CompactRange(self._size, self._hashes)

    def to_bytes(self) -> bytes:
        """8-byte big-endian size followed by the popcount(size) hashes, largest subtree first."""
        return self._size.to_bytes(8, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Inverse of `to_bytes`; raises DecodeError on any length mismatch."""
        if len(data) < 8:
            raise DecodeError("compact range is truncated", field="compact_range")
        size = int.from_bytes(data[:8], "big")
        count = size.bit_count()
        if len(data) != 8 + count * HASH_SIZE:
            raise DecodeError(f"compact range of size {size} must hold {count} hashes", field="compact_range")
        hashes = [data[8 + i * HASH_SIZE : 8 + (i + 1) * HASH_SIZE] for i in range(count)]
        return cls(size, hashes)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable: equal now, maybe not after an append

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


def append_records(
    tree: CompactRange, records: Iterable[bytes]
) -> tuple[list[tuple[int, bytes, bytes]], list[tuple[int, int, bytes]]]:
    """Append each record as a leaf of `tree` and return the rows a store persists beside the frontier.

    The first list holds `(index, record, leaf hash)` per record, the second `(level, index, hash)`
    for every interior node (level ≥ 1) the appends completed, in the order they completed.
    """
    leaves: list[tuple[int, bytes, bytes]] = []
    nodes: list[tuple[int, int, bytes]] = []

    def visit(level: int, index: int, h: bytes) -> None:
        if level > 0:  # level 0 is the leaf hash, stored with its record
            nodes.append((level, index, h))

    for data in records:
        leaf = leaf_hash(data)
        leaves.append((tree.size, data, leaf))
        tree.append(leaf, visit)
    return leaves, nodes
