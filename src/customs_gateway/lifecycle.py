"""Key lifecycle on a running gateway: rotate, revoke and retire keys without stopping traffic.

Each change writes the new private key (0600) and the next signed bundle, audit-logs the event and
queues a `key-announcement` through the normal durable outbox. A new signing key is used only once
the peer has receipted its announcement (`Identity.pending`); the retiring key keeps signing until
then, and in-flight messages signed with it stay acceptable. A small state file records a pending
switch so a crash between any two steps is resumed at start-up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any, Final

import structlog

from .core.audit import AuditEntry
from .core.bundle import KeyRecord, SignedBundle, sign_bundle
from .core.encoding import b64url, format_ts, json_bytes, json_object
from .core.errors import ConfigError, DecodeError, KeyStateError
from .core.keyfile import DEFAULT_MEMLIMIT, DEFAULT_OPSLIMIT
from .core.keys import ALG_ED25519, DecryptionKey, SigningKey
from .core.rotation import DEFAULT_OVERLAP, due_for_retirement, retire, revoke, rotate
from .gateway import Gateway
from .keystore import KeyStore, write_atomic
from .store.base import OutMessage

log = structlog.get_logger("customs_gateway.lifecycle")

STATE_FILE: Final = "rotation.json"
KINDS: Final = ("signing", "encryption")


class KeyLifecycle:
    """Rotation, revocation and retirement for one gateway's own keys."""

    def __init__(
        self,
        gw: Gateway,
        keystore: KeyStore,
        passphrase: bytes,
        *,
        overlap: dt.timedelta = DEFAULT_OVERLAP,
        opslimit: int = DEFAULT_OPSLIMIT,
        memlimit: int = DEFAULT_MEMLIMIT,
    ) -> None:
        self.gw = gw
        self.keystore = keystore
        self._passphrase = passphrase
        self.overlap = overlap
        self._kdf = (opslimit, memlimit)
        self._state_path = keystore.keys_dir / STATE_FILE

    # --- state file (pending signing switch) ---------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        if not self._state_path.exists():
            return {}
        try:
            return json_object(self._state_path.read_bytes(), field=STATE_FILE)
        except DecodeError as e:
            raise ConfigError(f"{self._state_path} is damaged: {e.detail}", field=STATE_FILE) from e

    def _write_state(self, state: dict[str, Any]) -> None:
        if state:
            write_atomic(self._state_path, json_bytes(state))
        else:
            self._state_path.unlink(missing_ok=True)

    async def resume(self) -> None:
        """At start-up: finish a change a crash cut short (the new bundle installed, its
        announcement and audit entry not yet committed: both are committed now, together); hold
        back a signing key whose announcement is not receipted yet, or promote it if it is."""
        state = self._read_state()
        intent = state.get("announce")
        if isinstance(intent, dict):
            state = await self._finish_intent(state, intent)
        kid = state.get("pending_signing")
        if not isinstance(kid, str):
            return
        announcement = state.get("announcement")
        if isinstance(announcement, str):
            msg = await self.gw.store.get_message(announcement)
            if msg is not None and msg.status in ("delivered", "acknowledged"):
                self._promote(kid)
                return
            self.gw.identity.pending.add(kid)
            if msg is not None:
                return
        self.gw.identity.pending.add(kid)
        ann = await self._announce("rotate", [kid], None, self.gw.identity.bundle, "system", "key_rotated")
        self._write_state({"pending_signing": kid, "announcement": ann.id})

    async def _finish_intent(self, state: dict[str, Any], intent: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in state.items() if k != "announce"}
        installed = self.gw.identity.bundle
        if intent.get("serial") != installed.bundle.serial:
            # The crash came before the new bundle was installed: the change never happened.
            log.warning("key.change_abandoned", event_name=intent.get("event"), serial=intent.get("serial"))
            rest.pop("pending_signing", None)
            self._write_state(rest)
            return rest
        kids = [str(k) for k in intent.get("kids", [])]
        reason = intent.get("reason")
        ann = await self._announce(
            str(intent.get("event")),
            kids,
            reason if isinstance(reason, str) else None,
            installed,
            str(intent.get("actor", "system")),
            str(intent.get("kind", "key_rotated")),
        )
        if "pending_signing" in rest:
            rest["announcement"] = ann.id
        self._write_state(rest)
        log.info("key.change_resumed", event_name=intent.get("event"), serial=installed.bundle.serial)
        return rest

    def _intend(
        self, state: dict[str, Any], event: str, kids: list[str], reason: str | None, actor: str, kind: str, serial: int
    ) -> None:
        """Write down the change about to be installed, so a crash before its announcement and
        audit entry commit is finished at the next start (`resume`)."""
        intent = {"event": event, "kids": kids, "reason": reason, "actor": actor, "kind": kind, "serial": serial}
        self._write_state({**state, "announce": intent})

    def _promote(self, kid: str) -> None:
        self.gw.identity.pending.discard(kid)
        self._write_state({})
        log.info("key.signing_switched", kid=kid)

    async def on_delivered(self, delivered: list[OutMessage]) -> None:
        """Called by the delivery worker with newly receipted messages."""
        state = self._read_state()
        ann = state.get("announcement")
        if any(m.id == ann for m in delivered):
            self._promote(str(state["pending_signing"]))

    # --- operations ----------------------------------------------------------------------
    async def rotate(self, kind: str, actor: str) -> dict[str, Any]:
        """Generate new keys of `kind`, sign the next bundle, queue the announcement."""
        if kind not in KINDS:
            raise KeyStateError("kind must be signing or encryption", code="schema.enum", field="$.kind", status=422)
        gw, idt = self.gw, self.gw.identity
        if kind == "signing" and idt.pending:
            raise KeyStateError(
                "a signing rotation is still waiting for the peer's receipt", code="key.rotation_pending", status=409
            )
        now = gw.clock.now()
        current = idt.bundle.bundle
        old_signer = idt.active_signing_key(now)
        until = max(r.not_after for r in current.keys if r.use == kind)
        new_records: list[KeyRecord] = []
        signers = [old_signer]
        if kind == "signing":
            new = SigningKey.generate(gw.randbytes)
            self.keystore.add_private_key(
                new, "signing", self._passphrase, opslimit=self._kdf[0], memlimit=self._kdf[1]
            )
            idt.signing[new.kid] = new
            new_records.append(KeyRecord(new.kid, "signing", ALG_ED25519, new.public_raw, now, until))
            signers.append(new)  # proof of possession
        else:
            algs = [
                a for a in dict.fromkeys(r.alg for r in current.keys if r.use == "encryption" and r.state == "active")
            ]
            for alg in algs:
                dk = DecryptionKey.generate(alg, gw.randbytes)
                self.keystore.add_private_key(
                    dk, "encryption", self._passphrase, opslimit=self._kdf[0], memlimit=self._kdf[1]
                )
                idt.decryption[dk.kid] = dk
                new_records.append(KeyRecord(dk.kid, "encryption", alg, dk.public.raw, now, until))
        signed = sign_bundle(rotate(current, new_records, kind, now), signers)
        kids = [r.kid for r in new_records]
        pending = {"pending_signing": kids[0]} if kind == "signing" else {}
        if kind == "signing":
            idt.pending.add(kids[0])
        self._intend(pending, "rotate", kids, None, actor, "key_rotated", signed.bundle.serial)
        self._install(signed)
        ann = await self._announce("rotate", kids, None, signed, actor, "key_rotated")
        self._write_state({**pending, "announcement": ann.id} if pending else {})
        return {"kind": kind, "kids": kids, "announcement_id": ann.id, "serial": signed.bundle.serial}

    async def revoke(self, kid: str, reason: str, actor: str) -> dict[str, Any]:
        """Revoke one of our keys from now on and announce it."""
        if not reason or len(reason) > 2000:
            raise KeyStateError(
                "reason is required (at most 2000 characters)", code="schema.required", field="$.reason", status=422
            )
        gw, idt = self.gw, self.gw.identity
        now = gw.clock.now()
        signer = idt.active_signing_key(now)
        rec = idt.bundle.bundle.key(kid)
        if rec is not None and rec.use == "witness":
            raise KeyStateError(
                "the witness key is replaced with the identity, not revoked alone",
                code="key.wrong_use",
                field="kid",
                status=409,
            )
        if kid == signer.kid:
            raise KeyStateError(
                "this is the signing key in use: rotate the signing key first, then revoke this one",
                code="key.revoke_active",
                field="kid",
                status=409,
            )
        if kid in idt.pending:
            raise KeyStateError(
                "this key is still being announced; wait for the peer's receipt",
                code="key.rotation_pending",
                status=409,
            )
        bundle = revoke(idt.bundle.bundle, kid, reason, now)
        if (
            rec is not None
            and rec.use == "encryption"
            and not any(r.use == "encryption" and r.state == "active" and r.kid != kid for r in bundle.keys)
        ):
            raise KeyStateError(
                "no other active encryption key: rotate encryption keys first",
                code="key.revoke_active",
                field="kid",
                status=409,
            )
        signed = sign_bundle(bundle, [signer])
        state = self._read_state()
        self._intend(state, "revoke", [kid], reason, actor, "key_revoked", signed.bundle.serial)
        self._install(signed)
        self._destroy(kid)
        ann = await self._announce("revoke", [kid], reason, signed, actor, "key_revoked")
        self._write_state(state)
        return {"kid": kid, "revoked_at": format_ts(now), "announcement_id": ann.id, "serial": signed.bundle.serial}

    async def retire_due(self) -> list[str]:
        """Retire retiring keys whose overlap window has passed; destroys their private keys."""
        gw, idt = self.gw, self.gw.identity
        now = gw.clock.now()
        in_use = idt.active_signing_key(now).kid
        kids = due_for_retirement(idt.bundle.bundle, now, self.overlap) - idt.pending - {in_use}
        if not kids:
            return []
        signed = sign_bundle(retire(idt.bundle.bundle, kids, now), [idt.active_signing_key(now)])
        state = self._read_state()
        self._intend(state, "retire", sorted(kids), None, "system", "key_rotated", signed.bundle.serial)
        self._install(signed)
        for kid in kids:
            self._destroy(kid)
        await self._announce("retire", sorted(kids), None, signed, "system", "key_rotated")
        self._write_state(state)
        return sorted(kids)

    # --- helpers -----------------------------------------------------------------------------
    def _install(self, signed: SignedBundle) -> None:
        self.keystore.save_bundle(signed)
        self.gw.identity.bundle = signed

    def _destroy(self, kid: str) -> None:
        """Forget a private key that must never be used again (revoked or retired)."""
        idt = self.gw.identity
        idt.signing.pop(kid, None)
        idt.decryption.pop(kid, None)
        path: Path = self.keystore.keys_dir / f"{kid}.key"
        path.unlink(missing_ok=True)

    async def _announce(
        self, event: str, kids: list[str], reason: str | None, signed: SignedBundle, actor: str, kind: str
    ) -> OutMessage:
        gw = self.gw
        now = gw.clock.now()
        body: dict[str, Any] = {"event": event, "bundle": b64url(signed.to_bytes()), "kids": kids}
        if reason is not None:
            body["reason"] = reason
        ttl = dt.timedelta(seconds=gw.config.delivery.default_ttl_seconds)
        msg = gw._new_message("key-announcement", body, now, now + ttl, None)
        audit = AuditEntry(
            at=now,
            kind=kind,
            actor=actor,
            message_id=msg.id,
            peer=gw.peer.identity,
            digests={"document": msg.document_sha256.hex(), "bundle": signed_digest(signed)},
            detail={"event": event, "kids": kids, "serial": signed.bundle.serial},
        )
        await gw.store.remember_bundle(gw.name, signed.to_bytes(), now)  # idempotent: before, so exports have it
        out, _ = await gw.store.submit(msg, audit)  # the announcement and its audit entry: one transaction
        gw.outbox_changed.set()
        log.info("key.announced", event_name=event, kids=kids, serial=signed.bundle.serial, message_id=msg.id)
        return out


def signed_digest(signed: SignedBundle) -> str:
    return hashlib.sha256(signed.bundle_bytes).hexdigest()
