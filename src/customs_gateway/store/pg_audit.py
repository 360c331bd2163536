"""The audit log in PostgreSQL tables: Merkle leaves, completed nodes and the frontier.

Appends run only inside a transaction holding the store's audit writer lock (see
`PostgresStore._tx`), so the frontier read here is the newest committed one and nobody else
appends until that transaction ends. Proofs and past roots read every node they need in one query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..core.audit import AuditEntry, in_time_order
from ..core.encoding import format_ts, parse_ts
from ..core.merkle import HASH_SIZE, CompactRange, NodeReader, TreeRangeError, append_records

T = TypeVar("T")


async def frontier(c: Any) -> CompactRange:
    """The log's frontier as last committed (empty before the first entry)."""
    data = await c.fetchval("SELECT compact FROM audit_state WHERE id=1")
    return CompactRange() if data is None else CompactRange.from_bytes(bytes(data))


async def append_entries(c: Any, entries: list[AuditEntry]) -> None:
    """Append entries as Merkle leaves, persisting the frontier and every completed node (audit
    lock held). Audit time never runs backwards (`core.audit.in_time_order`)."""
    row = await c.fetchrow("SELECT compact, last_at FROM audit_state WHERE id=1")
    tree = CompactRange() if row is None else CompactRange.from_bytes(bytes(row[0]))
    last = None
    if row is not None and row[1] is not None:
        last = parse_ts(row[1])
    elif row is not None:  # a log written before the time was kept: read it back once
        data = await c.fetchval("SELECT entry FROM audit ORDER BY idx DESC LIMIT 1")
        last = None if data is None else AuditEntry.from_bytes(bytes(data)).at
    ordered, last = in_time_order(entries, last)
    leaves, nodes = append_records(tree, [e.to_bytes() for e in ordered])
    # One statement (one round trip) for leaves, nodes and the frontier: every audited
    # transaction ends here, and on a busy machine each round trip costs a context switch.
    at = None if last is None else format_ts(last)
    await c.execute(_APPEND_SQL, *columns(leaves, 3), *columns(nodes, 3), tree.to_bytes(), at)


_APPEND_SQL = (
    "WITH leaves AS (INSERT INTO audit(idx, entry, leaf_hash)"
    " SELECT * FROM unnest($1::bigint[], $2::bytea[], $3::bytea[])),"
    " nodes AS (INSERT INTO audit_nodes(level, idx, hash)"
    " SELECT * FROM unnest($4::integer[], $5::bigint[], $6::bytea[]))"
    " INSERT INTO audit_state(id, compact, last_at) VALUES (1, $7, $8)"
    " ON CONFLICT (id) DO UPDATE SET compact=EXCLUDED.compact, last_at=EXCLUDED.last_at"
)


def columns(rows: list[Any], width: int) -> list[list[Any]]:
    """Rows as `width` column lists, for one statement that inserts them all with `unnest` (empty
    lists for no rows)."""
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def check_size(c: Any, size: int) -> None:
    current = (await frontier(c)).size
    if not 0 <= size <= current:
        raise TreeRangeError(f"size {size} is beyond the log's size {current}", field="size")


async def from_nodes(c: Any, compute: Callable[[NodeReader], T]) -> T:
    """Run a proof/root computation over stored nodes with one query instead of one per node.

    Which nodes a proof reads depends only on the index and sizes, never on hash values, so a
    dry run with placeholder hashes names them all; the real run then reads from what one
    query returned.
    """
    wanted: set[tuple[int, int]] = set()

    def record(level: int, index: int) -> bytes:
        wanted.add((level, index))
        return bytes(HASH_SIZE)

    compute(record)
    leaves = [i for level, i in wanted if level == 0]
    inner = [(level, i) for level, i in wanted if level > 0]
    found: dict[tuple[int, int], bytes] = {}
    if leaves:
        for r in await c.fetch("SELECT idx, leaf_hash FROM audit WHERE idx = ANY($1::bigint[])", leaves):
            found[(0, r[0])] = bytes(r[1])
    if inner:
        rows = await c.fetch(
            "SELECT level, idx, n.hash FROM audit_nodes n"
            " JOIN unnest($1::int[], $2::bigint[]) AS w(level, idx) USING (level, idx)",
            [level for level, _ in inner],
            [i for _, i in inner],
        )
        for r in rows:
            found[(r[0], r[1])] = bytes(r[2])

    def read(level: int, index: int) -> bytes:
        h = found.get((level, index))
        if h is None:
            raise TreeRangeError(f"the log has no node ({level}, {index})", field="size")
        return h

    return compute(read)
