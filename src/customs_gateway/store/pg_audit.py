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
    compact = None if row is None else bytes(row[0])
    last_at = await newest_time(c, compact, None if row is None else row[1])
    # One statement (one round trip) for leaves, nodes and the frontier: every audited
    # transaction ends here, and on a busy machine each round trip costs a context switch.
    await c.execute(f"WITH {append_ctes(1)} SELECT 1", *planned_append(compact, last_at, entries))


async def newest_time(c: Any, compact: bytes | None, last_at: str | None) -> str | None:
    """The time of the log's newest entry, as kept beside its frontier (`audit_state.last_at`);
    a log written before that time was kept (a frontier, no time) reads its newest entry once."""
    if compact is None or last_at is not None:
        return last_at
    data = await c.fetchval("SELECT entry FROM audit ORDER BY idx DESC LIMIT 1")
    return None if data is None else format_ts(AuditEntry.from_bytes(bytes(data)).at)


def planned_append(compact: bytes | None, last_at: str | None, entries: list[AuditEntry]) -> list[Any]:
    """The arguments of `append_ctes` that append `entries` to the log whose frontier and newest
    time (`newest_time`) were read under the audit lock: leaves and nodes as columns, the new
    frontier, the new newest time."""
    tree = CompactRange() if compact is None else CompactRange.from_bytes(compact)
    ordered, last = in_time_order(entries, None if last_at is None else parse_ts(last_at))
    leaves, nodes = append_records(tree, [e.to_bytes() for e in ordered])
    return [*columns(leaves, 3), *columns(nodes, 3), tree.to_bytes(), None if last is None else format_ts(last)]


def append_ctes(first: int) -> str:
    """Data-modifying CTEs (for a `WITH`) writing what `planned_append` returned, its eight
    arguments numbered from `$first`: another statement can carry the append in its round trip."""
    n = [f"${first + i}" for i in range(8)]
    return (
        f"audit_leaves AS (INSERT INTO audit(idx, entry, leaf_hash)"
        f" SELECT * FROM unnest({n[0]}::bigint[], {n[1]}::bytea[], {n[2]}::bytea[])),"
        f" audit_nodes_new AS (INSERT INTO audit_nodes(level, idx, hash)"
        f" SELECT * FROM unnest({n[3]}::integer[], {n[4]}::bigint[], {n[5]}::bytea[])),"
        f" audit_frontier AS (INSERT INTO audit_state(id, compact, last_at) VALUES (1, {n[6]}, {n[7]})"
        " ON CONFLICT (id) DO UPDATE SET compact=EXCLUDED.compact, last_at=EXCLUDED.last_at)"
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
