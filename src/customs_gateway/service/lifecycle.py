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
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..core.audit import AuditEntry
from ..core.bundle import KeyRecord, SignedBundle, sign_bundle
from ..core.encoding import b64url, format_ts, json_bytes, json_object
from ..core.errors import ConfigError, DecodeError, KeyStateError, SignatureError
from ..core.keyfile import DEFAULT_MEMLIMIT, DEFAULT_OPSLIMIT
from ..core.keys import ALG_ED25519, DecryptionKey, SigningKey
from ..core.rotation import (
    DEFAULT_OVERLAP,
    MAX_ANNOUNCED_BUNDLE,
    due_for_retirement,
    renew_tls,
    retire,
    revoke,
    rotate,
)
from ..core.tlscert import cert_info, possession_proof
from ..startup.keystore import KeyStore, new_tls_key, tls_key_pem, write_atomic
from ..store.base import OutMessage
from . import tls
from .gateway import Gateway

log = structlog.get_logger("customs_gateway.lifecycle")

STATE_FILE: Final = "rotation.json"
KINDS: Final = ("signing", "encryption")
RENEW_KINDS: Final = ("signing", "encryption", "witness", "tls")
#: Validity of renewed keys and certificates unless the administrator says otherwise.
DEFAULT_VALID_DAYS: Final = 730
MAX_VALID_DAYS: Final = 3650


def _installable(signed: SignedBundle) -> SignedBundle:
    """`signed` if it can become our bundle: it reads back and verifies as the peer will read it,
    and fits in a key announcement. Checked before anything is written, so a change that could
    not be installed leaves no key file, no pending switch and no intent behind."""
    data = signed.to_bytes()
    try:
        SignedBundle.from_bytes(data).verify_self_signed()
    except (DecodeError, KeyStateError, SignatureError) as e:
        raise KeyStateError(
            f"the next key bundle would not be valid ({e}); nothing was changed",
            code="key.bundle_invalid",
            status=409,
        ) from e
    size = len(b64url(data))
    if size > MAX_ANNOUNCED_BUNDLE:
        raise KeyStateError(
            f"the next key bundle would take {size} characters in its announcement, more than the "
            f"{MAX_ANNOUNCED_BUNDLE} one carries: retire keys whose overlap has ended first; nothing was changed",
            code="key.bundle_too_large",
            status=409,
        )
    return signed


def _pending_of(state: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, kid or certificate fingerprint) of the switch waiting for the peer's receipt."""
    pending = state.get("pending")
    if isinstance(pending, dict) and isinstance(pending.get("kind"), str) and isinstance(pending.get("id"), str):
        return str(pending["kind"]), str(pending["id"])
    kid = state.get("pending_signing")  # the state file's earlier form
    return ("signing", kid) if isinstance(kid, str) else None


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
        pending = _pending_of(state)
        if pending is None:
            if not state:
                self.keystore.promote_tls()  # a promotion a crash cut short (harmless otherwise)
            return
        kind, pid = pending
        announcement = state.get("announcement")
        if isinstance(announcement, str):
            msg = await self.gw.store.get_message(announcement)
            if msg is not None and msg.status in ("delivered", "acknowledged"):
                self._promote(kind, pid)
                return
            self.gw.identity.pending.add(pid)
            if msg is not None:
                return
        self.gw.identity.pending.add(pid)
        ann = await self._announce("rotate", [pid], None, self.gw.identity.bundle, "system", "key_rotated")
        self._write_state({"pending": {"kind": kind, "id": pid}, "announcement": ann.id})

    async def _finish_intent(self, state: dict[str, Any], intent: dict[str, Any]) -> dict[str, Any]:
        rest = {k: v for k, v in state.items() if k != "announce"}
        installed = self.gw.identity.bundle
        if intent.get("serial") != installed.bundle.serial:
            # The crash came before the new bundle was installed: the change never happened.
            log.warning("key.change_abandoned", event_name=intent.get("event"), serial=intent.get("serial"))
            rest.pop("pending_signing", None)
            rest.pop("pending", None)
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
        if _pending_of(rest) is not None:
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

    def _promote(self, kind: str, pid: str) -> None:
        """The peer has receipted the announcement: start using the new key (or certificate)."""
        self.gw.identity.pending.discard(pid)
        self._write_state({})  # first: a crash before the files below is finished by `resume`
        if kind == "tls":
            self.keystore.promote_tls()
            if self.gw.tls is not None:
                self.gw.tls.refresh()  # new handshakes present the renewed certificate
        log.info("key.switched", kind=kind, kid=pid)

    async def on_delivered(self, delivered: list[OutMessage]) -> None:
        """Called by the delivery worker with newly receipted messages."""
        state = self._read_state()
        ann = state.get("announcement")
        pending = _pending_of(state)
        if pending is not None and any(m.id == ann for m in delivered):
            self._promote(*pending)

    # --- operations ----------------------------------------------------------------------
    async def rotate(self, kind: str, actor: str) -> dict[str, Any]:
        """Generate new keys of `kind`, sign the next bundle, queue the announcement."""
        if kind not in KINDS:
            raise KeyStateError("kind must be signing or encryption", code="schema.enum", field="$.kind", status=422)
        gw, idt = self.gw, self.gw.identity
        if kind == "signing" or _pending_of(self._read_state()) is not None:
            self._check_idle()
        now = gw.clock.now()
        current = idt.bundle.bundle
        old_signer = idt.active_signing_key(now)
        until = max(r.not_after for r in current.keys if r.use == kind)
        new_records: list[KeyRecord] = []
        signers = [old_signer]
        made: list[tuple[SigningKey | DecryptionKey, str]] = []
        if kind == "signing":
            new = SigningKey.generate(gw.randbytes)
            made.append((new, "signing"))
            new_records.append(KeyRecord(new.kid, "signing", ALG_ED25519, new.public_raw, now, until))
            signers.append(new)  # proof of possession
        else:
            algs = [
                a for a in dict.fromkeys(r.alg for r in current.keys if r.use == "encryption" and r.state == "active")
            ]
            for alg in algs:
                dk = DecryptionKey.generate(alg, gw.randbytes)
                made.append((dk, "encryption"))
                new_records.append(KeyRecord(dk.kid, "encryption", alg, dk.public.raw, now, until))
        signed = _installable(sign_bundle(rotate(current, new_records, kind, now), signers))
        self._keep(made)
        kids = [r.kid for r in new_records]
        return await self._change(kind, "rotate", kids, signed, actor, "key_rotated")

    def _keep(self, made: list[tuple[SigningKey | DecryptionKey, str]]) -> None:
        """Store new private keys (once the bundle that lists them is known to be installable)."""
        idt = self.gw.identity
        for key, use in made:
            self.keystore.add_private_key(key, use, self._passphrase, opslimit=self._kdf[0], memlimit=self._kdf[1])
            if isinstance(key, DecryptionKey):
                idt.decryption[key.kid] = key
            else:
                (idt.signing if use == "signing" else idt.witnesses)[key.kid] = key

    async def _change(
        self, kind: str, event: str, kids: list[str], signed: SignedBundle, actor: str, audit_kind: str
    ) -> dict[str, Any]:
        """Install the next bundle and announce it; a new signing or witness key (or certificate)
        waits for the peer's receipt before it is used."""
        pending: dict[str, Any] = {}
        if kind in ("signing", "witness", "tls"):
            pending = {"pending": {"kind": kind, "id": kids[0]}}
            self.gw.identity.pending.add(kids[0])
        self._intend(pending, event, kids, None, actor, audit_kind, signed.bundle.serial)
        self._install(signed)
        ann = await self._announce(event, kids, None, signed, actor, audit_kind)
        self._write_state({**pending, "announcement": ann.id} if pending else {})
        return {"kind": kind, "kids": kids, "announcement_id": ann.id, "serial": signed.bundle.serial}

    def _check_idle(self) -> None:
        if self.gw.identity.pending or _pending_of(self._read_state()) is not None:
            raise KeyStateError(
                "an earlier key change is still waiting for the peer's receipt", code="key.rotation_pending", status=409
            )

    async def renew(self, kind: str, valid_days: int, actor: str) -> dict[str, Any]:
        """New keys (or a new TLS certificate) of `kind` valid `valid_days` from now, announced to
        the peer with proof of possession; the old ones keep working through the overlap."""
        if kind not in RENEW_KINDS:
            raise KeyStateError(
                f"kind must be one of {', '.join(RENEW_KINDS)}", code="schema.enum", field="$.kind", status=422
            )
        if isinstance(valid_days, bool) or not isinstance(valid_days, int) or not 1 <= valid_days <= MAX_VALID_DAYS:
            raise KeyStateError(
                f"valid_days must be a whole number of days from 1 to {MAX_VALID_DAYS}",
                code="schema.range",
                field="$.valid_days",
                status=422,
            )
        self._check_idle()
        gw, idt = self.gw, self.gw.identity
        now = gw.clock.now().replace(microsecond=0)
        until = now + dt.timedelta(days=valid_days)
        current = idt.bundle.bundle
        signer = idt.active_signing_key(now)
        kdf = {"opslimit": self._kdf[0], "memlimit": self._kdf[1]}
        if kind == "tls":
            tls_key = new_tls_key(gw.randbytes)
            cert = tls.make_self_signed(gw.name, tls.cert_hosts(idt.tls_cert_pem), now, valid_days, tls_key)
            signed = _installable(
                sign_bundle(renew_tls(current, cert.decode("ascii"), now + self.overlap, now), [signer])
            )
            self.keystore.add_tls_identity(cert, tls_key, self._passphrase, **kdf)
            idt.tls[cert.decode("ascii")] = tls_key_pem(tls_key)
            fp = cert_info(cert.decode("ascii")).fingerprint
            return {
                **await self._change("tls", "renew", [fp], signed, actor, "key_renewed"),
                "not_after": format_ts(until),
            }
        records: list[KeyRecord] = []
        signers = [signer]
        made: list[tuple[SigningKey | DecryptionKey, str]] = []
        if kind in ("signing", "witness"):
            new = SigningKey.generate(gw.randbytes)
            made.append((new, kind))
            records.append(KeyRecord(new.kid, kind, ALG_ED25519, new.public_raw, now, until))
            if kind == "signing":
                signers.append(new)  # proof of possession; a witness key shows it by cosigning
        else:
            algs = list(dict.fromkeys(r.alg for r in current.keys if r.use == "encryption" and r.state == "active"))
            for alg in algs:
                dk = DecryptionKey.generate(alg, gw.randbytes)
                made.append((dk, "encryption"))
                records.append(KeyRecord(dk.kid, "encryption", alg, dk.public.raw, now, until))
        signed = _installable(sign_bundle(rotate(current, records, kind, now), signers))
        self._keep(made)
        res = await self._change(kind, "renew", [r.kid for r in records], signed, actor, "key_renewed")
        return {**res, "not_after": format_ts(until)}

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
        waiting = {r.use for r in idt.bundle.bundle.keys if r.kid in idt.pending}
        due = due_for_retirement(idt.bundle.bundle, now, self.overlap) - idt.pending - {in_use}
        kids = {k for k in due if (r := idt.bundle.bundle.key(k)) is not None and r.use not in waiting}
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

    async def adopt_profile(self) -> int | None:
        """At start: when our bundle states another agreement profile than the one loaded (the
        profile file changed, or the identity predates profiles), sign the next bundle stating it
        and announce it to the peer (event `profile`); returns the new serial, None if unchanged."""
        gw, idt = self.gw, self.gw.identity
        current, sha = idt.bundle.bundle, gw.profile.sha256
        if current.agreement_profile == sha:
            return None
        now = gw.clock.now()
        bundle = replace(current, agreement_profile=sha, issued_at=now, serial=current.serial + 1)
        signed = sign_bundle(bundle, [idt.active_signing_key(now)])
        state = self._read_state()
        self._intend(state, "profile", [], None, "system", "key_rotated", signed.bundle.serial)
        self._install(signed)
        await self._announce("profile", [], None, signed, "system", "key_rotated")
        self._write_state(state)
        log.info("agreement_profile.announced", sha256=sha, previous=current.agreement_profile, serial=bundle.serial)
        return bundle.serial

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
        tls_key = gw.identity.tls.get(signed.bundle.tls_certificate)
        if tls_key is not None:  # proof that we hold the announced certificate's key (checked on a change)
            key = serialization.load_pem_private_key(tls_key, password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            body["tls_proof"] = b64url(possession_proof(key, signed.bundle_bytes))
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
