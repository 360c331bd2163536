"""Versioned PostgreSQL schema migrations. Append a new (version, statements) pair; never edit a shipped one.

The tables mirror `migrations.SQLITE_MIGRATIONS` with PostgreSQL types (timestamptz, bytea,
identity columns) plus what several replicas need: claim columns on `messages` and one
`outbox_lanes` row per peer that a replica locks to claim that peer's queue.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from ..core.errors import StoreUnavailable
from .migrations import consents_table, holds_table

PG_MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                peer TEXT NOT NULL,
                seq BIGINT NOT NULL,
                type TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL,
                signed_document BYTEA NOT NULL,
                document_sha256 BYTEA NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TIMESTAMPTZ NOT NULL,
                last_error TEXT,
                ciphertext BYTEA,
                enc_kid TEXT,
                receipt BYTEA,
                refusal BYTEA,
                ack BYTEA,
                token_id TEXT,
                updated_at TIMESTAMPTZ NOT NULL,
                claimed_by TEXT,
                claim_expires_at TIMESTAMPTZ,
                UNIQUE (peer, seq)
            )""",
            "CREATE INDEX messages_pending ON messages(peer, seq) WHERE status IN ('queued','sent')",
            "CREATE INDEX messages_status ON messages(status, id)",
            # Claims are released with each outcome, so this index holds only what is in flight.
            "CREATE INDEX messages_claimed ON messages(peer) WHERE claimed_by IS NOT NULL",
            """CREATE TABLE outbox_lanes (
                peer TEXT PRIMARY KEY
            )""",
            """CREATE TABLE history (
                n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                message_id TEXT NOT NULL REFERENCES messages(id),
                at TIMESTAMPTZ NOT NULL,
                status TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX history_message ON history(message_id, n)",
            """CREATE TABLE idempotency (
                token_id TEXT NOT NULL,
                key TEXT NOT NULL,
                request_hash BYTEA NOT NULL,
                message_id TEXT NOT NULL REFERENCES messages(id),
                created_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (token_id, key)
            )""",
            """CREATE TABLE inbox (
                cursor BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                sender TEXT NOT NULL,
                id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                type TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                received_at TIMESTAMPTZ NOT NULL,
                document_sha256 BYTEA NOT NULL,
                signed_document BYTEA NOT NULL,
                body BYTEA NOT NULL,
                receipt BYTEA NOT NULL,
                ack_status TEXT,
                ack_message_id TEXT,
                UNIQUE (sender, id)
            )""",
            "CREATE INDEX inbox_id ON inbox(id)",
            """CREATE TABLE peer_state (
                peer TEXT PRIMARY KEY,
                next_seq BIGINT NOT NULL DEFAULT 1,
                recv_high_water BIGINT NOT NULL DEFAULT 0,
                gap_count INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE seq_gaps (
                peer TEXT NOT NULL,
                from_seq BIGINT NOT NULL,
                to_seq BIGINT NOT NULL,
                detected_at TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX seq_gaps_peer ON seq_gaps(peer, from_seq)",
            """CREATE TABLE tokens (
                id TEXT PRIMARY KEY,
                role TEXT NOT NULL CHECK (role IN ('agency','admin','auditor')),
                secret_hash BYTEA NOT NULL,
                label TEXT NOT NULL DEFAULT '',
                created_at TIMESTAMPTZ NOT NULL,
                revoked_at TIMESTAMPTZ
            )""",
            """CREATE TABLE audit (
                idx BIGINT PRIMARY KEY,
                entry BYTEA NOT NULL,
                leaf_hash BYTEA NOT NULL
            )""",
            """CREATE TABLE audit_nodes (
                level INTEGER NOT NULL,
                idx BIGINT NOT NULL,
                hash BYTEA NOT NULL,
                PRIMARY KEY (level, idx)
            )""",
            """CREATE TABLE audit_state (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                compact BYTEA NOT NULL
            )""",
            """CREATE TABLE checkpoints (
                size BIGINT PRIMARY KEY,
                root BYTEA NOT NULL,
                note BYTEA NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                cosigned_note BYTEA,
                cosigned_at TIMESTAMPTZ
            )""",
            """CREATE TABLE witness_state (
                origin TEXT PRIMARY KEY,
                size BIGINT NOT NULL,
                root BYTEA NOT NULL,
                note BYTEA NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE key_bundles (
                owner TEXT NOT NULL,
                digest BYTEA NOT NULL,
                bundle BYTEA NOT NULL,
                stored_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (owner, digest)
            )""",
        ),
    ),
    # Version 2: find the entries about one message without reading the whole log (evidence for
    # one message, DESIGN §10). An expression index: the append path writes nothing more.
    (
        2,
        (
            """CREATE FUNCTION audit_message_id(entry BYTEA) RETURNS TEXT
                LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
                AS $$ SELECT convert_from(entry, 'UTF8')::jsonb ->> 'message_id' $$""",
            "CREATE INDEX audit_message ON audit (audit_message_id(entry))",
        ),
    ),
    # Version 3: the time of the newest audit entry beside the frontier, so audit time never runs
    # backwards (DESIGN §11) without reading the last entry back on every append.
    (3, ("ALTER TABLE audit_state ADD COLUMN last_at TEXT",)),
    # Version 4: find which message holds a sender's sequence number (replay.seq_reused).
    (4, ("CREATE INDEX inbox_seq ON inbox(sender, seq)",)),
    # Version 5: `sent` is now `retrying` (decision 0007): an attempt that reached no acceptance.
    (
        5,
        (
            "UPDATE messages SET status='retrying' WHERE status='sent'",
            "UPDATE history SET status='retrying' WHERE status='sent'",
            "DROP INDEX messages_pending",
            "CREATE INDEX messages_pending ON messages(peer, seq) WHERE status IN ('queued','retrying')",
        ),
    ),
    # Version 6: tokens may expire (issue 16).
    (6, ("ALTER TABLE tokens ADD COLUMN expires_at TIMESTAMPTZ",)),
    # Version 7: business references as keyed tags, never in clear (`core.reference`, issue 16).
    (
        7,
        (
            """CREATE TABLE refs (
                tag BYTEA NOT NULL,
                direction TEXT NOT NULL CHECK (direction IN ('out', 'in')),
                message_id TEXT NOT NULL,
                PRIMARY KEY (tag, direction, message_id)
            )""",
            "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            # Messages stored before the index get their tags from the running gateway
            # (`Gateway.backfill_references`), which holds the key; this row says it has work.
            "INSERT INTO store_meta(key, value) SELECT 'refs_backfill', ''"
            " WHERE EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM inbox)",
        ),
    ),
    # Version 8: threads (DESIGN §12): the message each one answers, found both ways.
    (
        8,
        (
            "ALTER TABLE messages ADD COLUMN in_reply_to TEXT",
            "ALTER TABLE inbox ADD COLUMN in_reply_to TEXT",
            "CREATE INDEX messages_reply ON messages(in_reply_to) WHERE in_reply_to IS NOT NULL",
            "CREATE INDEX inbox_reply ON inbox(in_reply_to) WHERE in_reply_to IS NOT NULL",
        ),
    ),
    # Version 9: consent requests and decisions (DESIGN §12, `core.consent`), on both sides.
    (9, (consents_table("TIMESTAMPTZ"), "CREATE INDEX consents_message ON consents(message_id)")),
    # Version 10: data at rest (issue 18, `store.sealed`): the day whose key seals the row's
    # bodies (NULL: stored in clear before this version; the start-up backfill seals them).
    (
        10,
        (
            "ALTER TABLE messages ADD COLUMN retain_until DATE",
            "ALTER TABLE inbox ADD COLUMN retain_until DATE",
            "CREATE INDEX messages_retain ON messages(retain_until)",
            "CREATE INDEX inbox_retain ON inbox(retain_until)",
            "INSERT INTO store_meta(key, value) SELECT 'seal_backfill', ''"
            " WHERE EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM inbox)"
            " ON CONFLICT (key) DO NOTHING",
        ),
    ),
    # Version 11: disposal and legal holds (issue 18, `store.retention`): when a row's sealed values
    # were disposed of, and the holds (ours and the peer's) on messages.
    (
        11,
        (
            "ALTER TABLE messages ADD COLUMN disposed_at TIMESTAMPTZ",
            "ALTER TABLE inbox ADD COLUMN disposed_at TIMESTAMPTZ",
            "CREATE INDEX messages_disposed ON messages(disposed_at) WHERE disposed_at IS NOT NULL",
            "CREATE INDEX inbox_disposed ON inbox(disposed_at) WHERE disposed_at IS NOT NULL",
            holds_table("TIMESTAMPTZ"),
        ),
    ),
)
"""Every version, oldest first. `PostgresStore.open` applies the pending ones in one transaction."""


def quote_ident(name: str) -> str:
    """`name` as a PostgreSQL identifier, quoted so any schema name is taken literally."""
    return '"' + name.replace('"', '""') + '"'


def lock_key(purpose: str, schema: str) -> int:
    """A 64-bit advisory-lock key for one purpose in one schema.

    Advisory locks are database-wide; keying them by schema lets gateways that share a database
    (one schema each) never wait on each other's audit log or migrations.
    """
    digest = hashlib.sha256(f"customs-gateway/{purpose}/{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(conn: Any, schema: str) -> int:
    """Create `schema` if missing and apply every pending version, all in one transaction.

    Replicas that start together serialise on an advisory lock, so each version runs exactly
    once; the others then find nothing pending. Returns the schema version now in place. Raises
    StoreUnavailable (`store.schema_newer`, not retryable) if the database is newer than this
    code: a replica must not run an old binary against a schema it does not know.
    """
    q = quote_ident(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("migrate", schema))
        # Checked before creating: CREATE SCHEMA IF NOT EXISTS still needs the CREATE privilege,
        # which a DBA-provisioned schema's owner may not hold on the database.
        if await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema) is None:
            await conn.execute(f"CREATE SCHEMA {q}")
        await conn.execute(f"SET LOCAL search_path TO {q}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        known = PG_MIGRATIONS[-1][0]
        if current > known:
            raise StoreUnavailable(
                f"schema {schema} is at version {current}; this build knows up to {known}",
                code="store.schema_newer",
            )
        for version, script in PG_MIGRATIONS:
            if version <= current:
                continue
            for stmt in script:
                await conn.execute(stmt)
            await conn.execute("INSERT INTO schema_version(version) VALUES ($1)", version)
            current = version
    return current
