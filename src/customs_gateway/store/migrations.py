"""Versioned schema migrations. Append a new (version, statements) pair; never edit a shipped one."""

from __future__ import annotations

from typing import Final

_V1: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    (
        1,
        (
            """CREATE TABLE messages (
                id TEXT PRIMARY KEY,
                peer TEXT NOT NULL,
                seq INTEGER NOT NULL,
                type TEXT NOT NULL,
                status TEXT NOT NULL,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                signed_document BLOB NOT NULL,
                document_sha256 BLOB NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT NOT NULL,
                last_error TEXT,
                ciphertext BLOB,
                enc_kid TEXT,
                receipt BLOB,
                refusal BLOB,
                ack BLOB,
                token_id TEXT,
                updated_at TEXT NOT NULL,
                UNIQUE (peer, seq)
            )""",
            "CREATE INDEX messages_pending ON messages(peer, seq) WHERE status IN ('queued','sent')",
            "CREATE INDEX messages_status ON messages(status, id)",
            """CREATE TABLE history (
                message_id TEXT NOT NULL REFERENCES messages(id),
                at TEXT NOT NULL,
                status TEXT NOT NULL,
                detail TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX history_message ON history(message_id)",
            """CREATE TABLE idempotency (
                token_id TEXT NOT NULL,
                key TEXT NOT NULL,
                request_hash BLOB NOT NULL,
                message_id TEXT NOT NULL REFERENCES messages(id),
                created_at TEXT NOT NULL,
                PRIMARY KEY (token_id, key)
            )""",
            """CREATE TABLE inbox (
                cursor INTEGER PRIMARY KEY AUTOINCREMENT,
                sender TEXT NOT NULL,
                id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                type TEXT NOT NULL,
                created_at TEXT NOT NULL,
                received_at TEXT NOT NULL,
                document_sha256 BLOB NOT NULL,
                signed_document BLOB NOT NULL,
                body BLOB NOT NULL,
                receipt BLOB NOT NULL,
                ack_status TEXT,
                ack_message_id TEXT,
                UNIQUE (sender, id)
            )""",
            "CREATE INDEX inbox_id ON inbox(id)",
            """CREATE TABLE peer_state (
                peer TEXT PRIMARY KEY,
                next_seq INTEGER NOT NULL DEFAULT 1,
                recv_high_water INTEGER NOT NULL DEFAULT 0,
                gap_count INTEGER NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE seq_gaps (
                peer TEXT NOT NULL,
                from_seq INTEGER NOT NULL,
                to_seq INTEGER NOT NULL,
                detected_at TEXT NOT NULL
            )""",
            """CREATE TABLE tokens (
                id TEXT PRIMARY KEY,
                role TEXT NOT NULL CHECK (role IN ('agency','admin','auditor')),
                secret_hash BLOB NOT NULL,
                label TEXT NOT NULL DEFAULT '',
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
            """CREATE TABLE audit (
                idx INTEGER PRIMARY KEY,
                entry BLOB NOT NULL,
                leaf_hash BLOB NOT NULL
            )""",
        ),
    ),
)


# Version 2: the Merkle tree over `audit` (frontier + completed interior nodes), signed
# checkpoints with their peer cosignatures, the witness state we keep for the peer's log, and
# every key bundle either side has published (for exports that verify after rotations).
def consents_table(timestamp: str) -> str:
    """Consent requests and their latest decisions (`core.consent`): `role` says which side we are
    on. The same table on both engines but for the timestamp column type."""
    return f"""CREATE TABLE consents (
    request_id TEXT PRIMARY KEY,
    message_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('requester', 'provider')),
    use_kind TEXT NOT NULL CHECK (use_kind IN ('onward_transfer', 'evidentiary_use')),
    party TEXT NOT NULL,
    reason TEXT NOT NULL,
    requested_at {timestamp} NOT NULL,
    decision_id TEXT,
    decision TEXT CHECK (decision IN ('granted', 'refused', 'granted_with_conditions')),
    conditions TEXT,
    decision_reason TEXT,
    valid_until TEXT,
    decided_at {timestamp}
)"""


def holds_table(timestamp: str) -> str:
    """Legal holds (`store.retention`): ours, and the peer's as its notices tell them."""
    return f"""CREATE TABLE holds (
    message_id TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('ours', 'peer')),
    direction TEXT NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    reason TEXT NOT NULL,
    placed_by TEXT NOT NULL,
    placed_at {timestamp} NOT NULL,
    hold_id TEXT,
    notice_id TEXT,
    released_at {timestamp},
    released_by TEXT,
    release_reason TEXT,
    PRIMARY KEY (message_id, origin)
)"""


SQLITE_MIGRATIONS: Final[tuple[tuple[int, tuple[str, ...]], ...]] = (
    *_V1,
    (
        2,
        (
            """CREATE TABLE audit_nodes (
                level INTEGER NOT NULL,
                idx INTEGER NOT NULL,
                hash BLOB NOT NULL,
                PRIMARY KEY (level, idx)
            ) WITHOUT ROWID""",
            """CREATE TABLE audit_state (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                compact BLOB NOT NULL
            )""",
            """CREATE TABLE checkpoints (
                size INTEGER PRIMARY KEY,
                root BLOB NOT NULL,
                note BLOB NOT NULL,
                created_at TEXT NOT NULL,
                cosigned_note BLOB,
                cosigned_at TEXT
            )""",
            """CREATE TABLE witness_state (
                origin TEXT PRIMARY KEY,
                size INTEGER NOT NULL,
                root BLOB NOT NULL,
                note BLOB NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE key_bundles (
                owner TEXT NOT NULL,
                digest BLOB NOT NULL,
                bundle BLOB NOT NULL,
                stored_at TEXT NOT NULL,
                PRIMARY KEY (owner, digest)
            )""",
        ),
    ),
    # Version 3: find the entries about one message without reading the whole log (evidence for
    # one message, DESIGN §10). An expression index: the append path writes nothing more.
    (
        3,
        ("CREATE INDEX audit_message ON audit(json_extract(CAST(entry AS TEXT), '$.message_id'))",),
    ),
    # Version 4: the time of the newest audit entry beside the frontier, so audit time never runs
    # backwards (DESIGN §11) without reading the last entry back on every append.
    (4, ("ALTER TABLE audit_state ADD COLUMN last_at TEXT",)),
    # Version 5: find which message holds a sender's sequence number (replay.seq_reused).
    (5, ("CREATE INDEX inbox_seq ON inbox(sender, seq)",)),
    # Version 6: `sent` is now `retrying` (decision 0007): an attempt that reached no acceptance.
    (
        6,
        (
            "UPDATE messages SET status='retrying' WHERE status='sent'",
            "UPDATE history SET status='retrying' WHERE status='sent'",
            "DROP INDEX messages_pending",
            "CREATE INDEX messages_pending ON messages(peer, seq) WHERE status IN ('queued','retrying')",
        ),
    ),
    # Version 7: tokens may expire (issue 16).
    (7, ("ALTER TABLE tokens ADD COLUMN expires_at TEXT",)),
    # Version 8: business references as keyed tags, never in clear (`core.reference`, issue 16).
    (
        8,
        (
            """CREATE TABLE refs (
                tag BLOB NOT NULL,
                direction TEXT NOT NULL CHECK (direction IN ('out', 'in')),
                message_id TEXT NOT NULL,
                PRIMARY KEY (tag, direction, message_id)
            ) WITHOUT ROWID""",
            "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            # Messages stored before the index get their tags from the running gateway
            # (`Gateway.backfill_references`), which holds the key; this row says it has work.
            "INSERT INTO store_meta(key, value) SELECT 'refs_backfill', ''"
            " WHERE EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM inbox)",
        ),
    ),
    # Version 9: threads (DESIGN §12): the message each one answers, found both ways.
    (
        9,
        (
            "ALTER TABLE messages ADD COLUMN in_reply_to TEXT",
            "ALTER TABLE inbox ADD COLUMN in_reply_to TEXT",
            "CREATE INDEX messages_reply ON messages(in_reply_to) WHERE in_reply_to IS NOT NULL",
            "CREATE INDEX inbox_reply ON inbox(in_reply_to) WHERE in_reply_to IS NOT NULL",
        ),
    ),
    # Version 10: consent requests and decisions (DESIGN §12, `core.consent`), on both sides.
    (10, (consents_table("TEXT"), "CREATE INDEX consents_message ON consents(message_id)")),
    # Version 11: data at rest (issue 18, `store.sealed`): the day whose key seals the row's
    # bodies (NULL: stored in clear before this version; the start-up backfill seals them).
    (
        11,
        (
            "ALTER TABLE messages ADD COLUMN retain_until TEXT",
            "ALTER TABLE inbox ADD COLUMN retain_until TEXT",
            "CREATE INDEX messages_retain ON messages(retain_until)",
            "CREATE INDEX inbox_retain ON inbox(retain_until)",
            "INSERT OR REPLACE INTO store_meta(key, value) SELECT 'seal_backfill', ''"
            " WHERE EXISTS (SELECT 1 FROM messages) OR EXISTS (SELECT 1 FROM inbox)",
        ),
    ),
    # Version 12: disposal and legal holds (issue 18, `store.retention`): when a row's sealed values
    # were disposed of, and the holds (ours and the peer's) on messages.
    (
        12,
        (
            "ALTER TABLE messages ADD COLUMN disposed_at TEXT",
            "ALTER TABLE inbox ADD COLUMN disposed_at TEXT",
            "CREATE INDEX messages_disposed ON messages(disposed_at) WHERE disposed_at IS NOT NULL",
            "CREATE INDEX inbox_disposed ON inbox(disposed_at) WHERE disposed_at IS NOT NULL",
            holds_table("TEXT"),
        ),
    ),
)
