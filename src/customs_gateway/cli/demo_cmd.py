"""`customs-gateway demo`: two gateways on loopback exchanging every message type, end to end.

US-CBP and CN-GACC run with real mutual TLS and real SQLite files, keys from `keys-example/`.
Every step is checked, not just performed; the summary table shows each, and the exit code is 0
only if all held.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from rich.console import Console
from rich.table import Table

from ..core.audit_bundle import VerifyReport, verify_bundle
from ..core.clock import JumpClock
from ..core.envelope import BUSINESS_TYPES, SignedDocument
from ..core.evidence import verify_evidence
from ..core.receipt import Statement, verify_receipt
from ..service.audit_export import export_bundle
from ..service.gateway import issue_token
from ..service.pair import IDENTITIES, LocalPair, example_dir, prepare_pair
from ..startup.logs import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run two gateways on loopback and exchange every message type")
    p.add_argument("--dir", help="keep the two gateway homes here (default: a temporary directory)")
    p.add_argument("--json", action="store_true", help="print the step results as JSON")
    p.set_defaults(func=run)


@dataclass
class Step:
    name: str
    ok: bool
    detail: str
    seconds: float


class Demo:
    def __init__(self, root: Path, console: Console) -> None:
        self.root = root
        self.console = console
        self.steps: list[Step] = []
        self.acked = ""
        self.pair: LocalPair | None = None
        self.tokens: dict[str, dict[str, str]] = {}
        self.session: aiohttp.ClientSession | None = None
        #: Both gateways' clock: the wall clock, moved forward by the retention step (days pass).
        self.clock = JumpClock()

    async def step(self, name: str, fn: Callable[[], Awaitable[str]]) -> bool:
        t0 = time.perf_counter()
        try:
            detail, ok = await fn(), True
        except Exception as e:  # a demo step failing is a result to report, not a crash
            detail, ok = f"{type(e).__name__}: {e}", False
        self.steps.append(Step(name, ok, detail, time.perf_counter() - t0))
        mark = "[green]ok[/]" if ok else "[red]FAILED[/]"
        self.console.print(f"  {mark}  {name}: {detail}")
        return ok

    def url(self, name: str) -> str:
        assert self.pair is not None
        return self.pair.homes[name].local_url

    async def call(self, name: str, method: str, path: str, role: str = "agency", body: Any = None) -> tuple[int, Any]:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {self.tokens[name][role]}"}
        async with self.session.request(method, self.url(name) + path, json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def wait_for(self, name: str, mid: str, want: set[str], timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            status, m = await self.call(name, "GET", f"/v1/messages/{mid}")
            if status != 200:
                raise RuntimeError(f"status of {mid}: HTTP {status} {m}")
            if m["status"] in want:
                return dict(m)
            if time.monotonic() > end:
                raise RuntimeError(f"{mid} still {m['status']} after {timeout:.0f} s ({m.get('last_error')})")
            await asyncio.sleep(0.05)

    async def upload(self, name: str, data: bytes, filename: str, media_type: str = "application/pdf") -> str:
        """A complete upload (`POST /v1/files`) on `name`'s gateway; its file id."""
        assert self.session is not None
        headers = {"Authorization": f"Bearer {self.tokens[name]['agency']}", "Content-Type": media_type}
        url = self.url(name) + "/v1/files?filename=" + quote(filename)
        async with self.session.post(url, data=data, headers=headers) as r:
            res = await r.json(content_type=None)
            if r.status != 201:
                raise RuntimeError(f"upload {filename}: HTTP {r.status} {res}")
            return str(res["file_id"])

    async def with_files(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """`body` with each file it names uploaded now (a small generated PDF) and named by its id."""
        if "files" not in body:
            return body
        files = []
        for f in body["files"]:
            data = training_guide(64 * 1024, f["filename"])
            files.append({**f, "file_id": await self.upload(name, data, f["filename"])})
        return {**body, "files": files}

    # --- the steps -------------------------------------------------------------------------
    async def start(self) -> str:
        homes = prepare_pair(self.root)
        self.pair = LocalPair(homes)
        await self.pair.start_all(clock=self.clock)
        for name, server in self.pair.servers.items():
            gw = server.gateway
            self.tokens[name] = {}
            for role in ("agency", "admin", "auditor"):
                _, secret = await issue_token(gw.store, gw.clock, role, f"demo {role}", "demo")
                self.tokens[name][role] = secret
        self.session = aiohttp.ClientSession()
        ports = ", ".join(f"{n} local :{h.local_port} peer :{h.peer_port} (mTLS)" for n, h in homes.items())
        return ports

    async def exchange(self, sender: str, receiver: str) -> str:
        ids: dict[str, str] = {}
        # Replies and consent name messages the sender really received from the receiver.
        invitation = await self._received(sender, receiver, "port-visit-invitation", sample("port-visit-invitation"))
        asked_about = await self._received(receiver, sender, "seizure-share", sample("seizure-share"))
        request = await self._received(
            sender, receiver, "consent-request", {**sample("consent-request"), "message_id": asked_about}
        )
        names = {
            "port-visit-reply": {"invitation_id": invitation},
            "consent-request": {"message_id": invitation},
            "consent-decision": {"request_id": request},
        }
        for t in BUSINESS_TYPES:
            body = await self.with_files(sender, {**sample(t), **names.get(t, {})})
            status, res = await self.call(
                sender, "POST", "/v1/messages", body={"type": t, "to": receiver, "body": body}
            )
            if status != 202:
                raise RuntimeError(f"submit {t}: HTTP {status} {res}")
            ids[t] = res["id"]
        assert self.pair is not None
        peer_keys = self.pair.servers[sender].gateway.peer
        for mid in ids.values():
            m = await self.wait_for(sender, mid, {"delivered"})
            verify_receipt(
                Statement.from_dict("receipt", m["receipt"]),
                message_id=mid,
                sender=sender,
                receiver=receiver,
                document_sha256=bytes.fromhex(m["document_sha256"]),
                key_for=peer_keys.verify_key,
            )
        _, inbox = await self.call(receiver, "GET", "/v1/inbox?limit=500")
        got = {m["id"] for m in inbox["messages"] if m["from"] == sender}
        missing = set(ids.values()) - got
        if missing:
            raise RuntimeError(f"{len(missing)} delivered messages missing from {receiver}'s inbox")
        return f"{len(ids)} types delivered, receipts verified, all in {receiver}'s inbox"

    async def _received(self, holder: str, provider: str, msg_type: str, body: dict[str, Any]) -> str:
        """The id of a `msg_type` message `holder` received from `provider` (sent now if none)."""
        _, inbox = await self.call(holder, "GET", "/v1/inbox?limit=500")
        held = [m["id"] for m in inbox["messages"] if m["type"] == msg_type and m["from"] == provider]
        if held:
            return str(held[-1])
        return await self.send(provider, msg_type, body)

    async def send(self, sender: str, msg_type: str, body: dict[str, Any], in_reply_to: str | None = None) -> str:
        """Submit one message and wait until the peer has receipted it; its id."""
        receiver = IDENTITIES[1] if sender == IDENTITIES[0] else IDENTITIES[0]
        req: dict[str, Any] = {"type": msg_type, "to": receiver, "body": body}
        if in_reply_to is not None:
            req["in_reply_to"] = in_reply_to
        status, res = await self.call(sender, "POST", "/v1/messages", body=req)
        if status != 202:
            raise RuntimeError(f"submit {msg_type}: HTTP {status} {res}")
        await self.wait_for(sender, res["id"], {"delivered"})
        return str(res["id"])

    async def agreement_flows(self) -> str:
        """A seizure share followed up by an information request and its answer; a joint operation
        from proposal to outcome; each a thread both sides hold the same way."""
        us, cn = IDENTITIES
        share = await self.send(us, "seizure-share", sample("seizure-share"))
        question = await self.send(cn, "information-request", sample("information-request"), in_reply_to=share)
        answer = sample("seizure-share")
        answer["notes"] = "Shipper details as asked; export declaration attached to the case file.\n发货人信息如下。"
        await self.send(us, "seizure-share", answer, in_reply_to=question)
        op = sample("joint-operation")
        results = {
            "shipments_inspected": 1240,
            "shipments_seized": 37,
            "items_seized": 52000,
            "arrests": 4,
            "leads": 11,
        }
        last = await self.send(cn, "joint-operation", op)
        first_op, from_us = last, set()
        for sender, phase in ((us, "plan"), (cn, "update"), (us, "outcome")):
            body = {**op, "phase": phase, **({"results": results} if phase in ("update", "outcome") else {})}
            last = await self.send(sender, "joint-operation", body, in_reply_to=last)
            if sender == us:
                from_us.add(last)
        assert self.pair is not None
        shapes = []
        for root, want in ((share, 3), (first_op, 4)):
            seen = []
            for name in IDENTITIES:
                found = await self.pair.servers[name].gateway.store.thread(last if root == first_op else root)
                if found is None or found[0] != root or len(found[1]) != want:
                    raise RuntimeError(f"{name} does not hold the thread of {root[:13]}… whole: {found}")
                seen.append([t.id for t in found[1]])
            if seen[0] != seen[1]:
                raise RuntimeError(f"the two sides order the thread of {root[:13]}… differently")
            shapes.append(len(seen[0]))
        status, page = await self.call(cn, "GET", f"/v1/inbox?limit=500&reference={quote(op['operation_name'])}")
        if status != 200 or not from_us <= {m["id"] for m in page["messages"]}:
            raise RuntimeError(f"{cn} did not find the plan and the outcome by the operation's name: HTTP {status}")
        return (
            f"seizure share → information request → answer ({shapes[0]} messages, one thread on both sides); "
            f"joint operation proposal → plan → update → outcome ({shapes[1]}), found by its name"
        )

    async def consent_flow(self) -> str:
        """The handling terms a seizure share carries, refused terms, and the consent exchange:
        CN-GACC asks to pass the share to another authority, US-CBP grants with conditions, and
        CN-GACC's inbox item then shows the grant."""
        us, cn = IDENTITIES
        body = sample("seizure-share")
        status, bad = await self.call(
            us,
            "POST",
            "/v1/messages",
            body={"type": "seizure-share", "to": cn, "body": body, "handling": {"evidentiary_use": "permitted"}},
        )
        if status != 422 or bad.get("code") != "handling.evidentiary_use":
            raise RuntimeError(f"terms outside the profile were not refused: HTTP {status} {bad}")
        share = await self.send(us, "seizure-share", body)
        _, item = await self.call(cn, "GET", f"/v1/inbox/{share}")
        terms = item["handling"]
        ask = {
            "use": "onward_transfer",
            "authority": "Ministry of Public Security, Economic Crime Investigation Department / 公安部经济犯罪侦查局",
            "reason": "Joint investigation of the shipper named in the seizure / 对扣押中所列发货人的联合调查",
        }
        status, req = await self.call(cn, "POST", f"/v1/inbox/{share}/consent-requests", body=ask)
        if status != 202:
            raise RuntimeError(f"consent request: HTTP {status} {req}")
        await self.wait_for(cn, req["id"], {"delivered"})
        decision = {
            "decision": "granted_with_conditions",
            "conditions": "For this investigation only; not to be used as evidence without a further request.\n"
            "仅限本次调查使用；未经再次请求不得作为证据使用。",
        }
        status, dec = await self.call(
            us, "POST", f"/v1/messages/{share}/consent-requests/{req['id']}/decision", body=decision
        )
        if status != 202:
            raise RuntimeError(f"consent decision: HTTP {status} {dec}")
        await self.wait_for(us, dec["id"], {"delivered"})
        _, item = await self.call(cn, "GET", f"/v1/inbox/{share}")
        granted = item["permissions"]["onward_transfer"]["granted"]
        if [g["decision_id"] for g in granted] != [dec["id"]]:
            raise RuntimeError(f"{cn}'s permissions do not show the grant: {item['permissions']}")
        return (
            f"terms {terms['purpose']}, {terms['confidentiality']['level']}, "
            f"onward transfer {terms['onward_transfer']}, kept until {terms['retain_until']}; "
            f"'evidentiary_use: permitted' refused (422); {cn} asked consent, "
            f"{us} granted with conditions, {cn}'s inbox item now lists the grant"
        )

    async def retention(self) -> str:
        """Retention (DESIGN §12): two seizure shares kept until tomorrow; CN-GACC places a legal
        hold on one (US-CBP is told by a signed notice); two days pass on both gateways' clock;
        US-CBP disposes of both its copies, CN-GACC of the one it does not hold; both destroy the
        day key (CN-GACC's held copy is sealed under a key of its own)."""
        us, cn = IDENTITIES
        assert self.pair is not None
        until = (self.clock.now().date() + dt.timedelta(days=1)).isoformat()
        ids = []
        for case in ("CBP-RET-0001", "CBP-RET-0002"):
            body = {**sample("seizure-share"), "case_reference": case}
            status, res = await self.call(
                us,
                "POST",
                "/v1/messages",
                body={"type": "seizure-share", "to": cn, "body": body, "handling": {"retain_until": until}},
            )
            if status != 202:
                raise RuntimeError(f"submit: HTTP {status} {res}")
            await self.wait_for(us, res["id"], {"delivered"})
            ids.append(res["id"])
        held, gone = ids
        reason = "Guangzhou IP Court case 2026-17: preserve / 广州知识产权法院 2026-17 号案件：保全"
        status, hold = await self.call(
            cn, "POST", "/v1/admin/holds", role="admin", body={"message_id": held, "reason": reason}
        )
        if status != 201:
            raise RuntimeError(f"legal hold: HTTP {status} {hold}")
        for _ in range(200):
            _, m = await self.call(us, "GET", f"/v1/messages/{held}")
            if m.get("legal_holds"):
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"{us} was not told of the hold")
        self.clock.jump(dt.timedelta(days=2))
        for side, want in ((us, sorted(ids)), (cn, [gone])):
            run = await self.pair.servers[side].gateway.disposal.run_once()
            if sorted(run.disposed) != want or [d.isoformat() for d in run.days_destroyed] != [until]:
                raise RuntimeError(f"{side} disposed of {run.disposed} and days {run.days_destroyed}, expected {want}")
        _, item = await self.call(cn, "GET", f"/v1/inbox/{gone}")
        _, kept = await self.call(cn, "GET", f"/v1/inbox/{held}")
        if item.get("body") is not None or kept.get("body") is None:
            raise RuntimeError("disposal did not leave the held message alone and blank the other")
        for side, count in ((us, 2), (cn, 1)):  # the exports still verify offline, disposed documents withheld
            report = await self.export_and_verify(side, f"audit-{side}-after-disposal.jsonl")
            if report.disposed != count:
                raise RuntimeError(f"{side}'s export shows {report.disposed} disposed messages, expected {count}")
        return (
            f"{cn} held one share ({us} told by a signed notice); two days later {us} disposed of both its "
            f"copies and {cn} of the other one (bodies gone; receipts and audit entries kept), both destroyed "
            f"the day key of {until}; the held copy is still readable; both exports verify offline, the "
            f"disposed documents withheld"
        )

    async def training_guide(self) -> str:
        """A generated training guide of a few MB from US-CBP to CN-GACC as `training-material`:
        uploaded, its ciphertext pushed ahead of the envelope, checked whole by the receiver, then
        downloaded there decrypted as it streams, and compared."""
        us, cn = IDENTITIES
        assert self.session is not None
        data = training_guide(4 * 1024 * 1024, "IPR enforcement training guide")
        t0 = time.perf_counter()
        fid = await self.upload(us, data, "知识产权执法培训指南-training-guide.pdf")
        body = sample("training-material")
        body["files"] = [{**body["files"][0], "file_id": fid}]
        mid = await self.send(us, "training-material", body)
        headers = {"Authorization": f"Bearer {self.tokens[cn]['agency']}"}
        digest, n = hashlib.sha256(), 0
        async with self.session.get(self.url(cn) + f"/v1/inbox/{mid}/files/{fid}", headers=headers) as r:
            if r.status != 200:
                raise RuntimeError(f"download: HTTP {r.status}")
            async for piece in r.content.iter_chunked(65536):
                digest.update(piece)
                n += len(piece)
        if n != len(data) or digest.digest() != hashlib.sha256(data).digest():
            raise RuntimeError("the downloaded guide is not the one sent")
        took = time.perf_counter() - t0
        return f"{len(data) / 1048576:.1f} MiB uploaded, pushed encrypted, checked and downloaded in {took:.2f} s"

    async def replay_and_ack(self) -> str:
        us, cn = IDENTITIES
        _, inbox = await self.call(cn, "GET", "/v1/inbox?limit=500")
        first = next(m for m in inbox["messages"] if m["type"] == "seizure-share")
        self.acked = str(first["id"])
        status, res = await self.call(cn, "POST", f"/v1/inbox/{first['id']}/ack", body={"status": "processed"})
        if status != 202:
            raise RuntimeError(f"ack: HTTP {status} {res}")
        m = await self.wait_for(us, first["id"], {"acknowledged"})
        return f"{cn} acknowledged {first['id'][:13]}…; {us} shows it {m['status']} ({m['ack']['status']})"

    async def rotation_mid_stream(self) -> str:
        """US-CBP rotates its signing key while both sides keep sending; nothing may be lost."""
        us, cn = IDENTITIES
        assert self.pair is not None
        gw_us = self.pair.servers[us].gateway
        old = gw_us.identity.active_signing_key(gw_us.clock.now()).kid
        body = json.loads((example_dir() / "messages" / "seizure-share.json").read_text(encoding="utf-8"))
        sent: dict[str, list[str]] = {us: [], cn: []}
        rotation: dict[str, Any] = {}
        for i in range(40):
            for side, other in ((us, cn), (cn, us)):
                status, res = await self.call(
                    side, "POST", "/v1/messages", body={"type": "seizure-share", "to": other, "body": body}
                )
                if status != 202:
                    raise RuntimeError(f"submit during rotation: HTTP {status} {res}")
                sent[side].append(res["id"])
            if i == 10:
                status, rotation = await self.call(
                    us, "POST", "/v1/admin/keys/rotate", role="admin", body={"kind": "signing"}
                )
                if status != 202:
                    raise RuntimeError(f"rotate: HTTP {status} {rotation}")
            await asyncio.sleep(0.01)
        for side, ids in sent.items():
            for mid in ids:
                await self.wait_for(side, mid, {"delivered"})
        new = rotation["kids"][0]
        end = time.monotonic() + 30
        while gw_us.identity.active_signing_key(gw_us.clock.now()).kid != new:
            if time.monotonic() > end:
                raise RuntimeError("the new signing key was never switched to")
            await asyncio.sleep(0.05)
        for side, other in ((us, cn), (cn, us)):
            _, inbox = await self.call(other, "GET", "/v1/inbox?limit=500")
            got = [m["id"] for m in inbox["messages"] if m["id"] in set(sent[side])]
            if got != sent[side]:
                raise RuntimeError(f"{other}'s inbox does not hold exactly what {side} sent, in order")
        # The next message is signed with the new key.
        status, res = await self.call(
            us, "POST", "/v1/messages", body={"type": "seizure-share", "to": cn, "body": body}
        )
        await self.wait_for(us, res["id"], {"delivered"})
        msg = await gw_us.store.get_message(res["id"])
        assert msg is not None
        signer = SignedDocument.from_bytes(msg.signed_document).kid
        if signer != new:
            raise RuntimeError(f"new messages are still signed by {signer}")
        n = sum(len(v) for v in sent.values())
        return f"{n} messages during the rotation all delivered once, in order; signing key {old[:8]}… → {new[:8]}…"

    async def cosign(self) -> str:
        """Each gateway checkpoints its audit log and the peer cosigns it."""
        assert self.pair is not None
        parts = []
        for name, server in self.pair.servers.items():
            cpr = server.checkpointer
            assert cpr is not None
            cp = await cpr.checkpoint_now()
            if cp is None or not await cpr.cosign_latest():
                raise RuntimeError(f"{name}'s checkpoint was not cosigned: {cpr.status.last_error}")
            parts.append(f"{name} size {cp.size}")
        return "checkpoints signed and cosigned by the peer: " + ", ".join(parts)

    async def audit(self) -> str:
        """Both sides export their audit log; each bundle verifies offline with public keys only."""
        assert self.pair is not None
        parts = []
        for name in self.pair.servers:
            report = await self.export_and_verify(name, f"audit-{name}.jsonl")
            parts.append(
                f"{name}: {report.entries} entries, {report.documents} documents, {report.receipts} receipts, "
                f"{report.cosigned_checkpoints} cosigned checkpoints"
            )
        return "offline verify held — " + "; ".join(parts)

    async def export_and_verify(self, name: str, filename: str) -> VerifyReport:
        """Export `name`'s audit log to `filename` under the demo directory and verify it offline."""
        assert self.pair is not None
        gw = self.pair.servers[name].gateway
        path = self.root / filename
        with path.open("wb") as f:
            await export_bundle(
                gw.store,
                log=gw.name,
                peer=gw.peer.identity,
                own_bundle=gw.identity.bundle.to_bytes(),
                peer_bundle=gw.config.path(gw.config.peer.bundle).read_bytes(),
                out=f,
                now=gw.clock.now(),
            )
        with path.open("rb") as f:
            return await asyncio.to_thread(verify_bundle, f, require_cosigned=True)

    async def evidence(self) -> str:
        """Evidence for the acknowledged seizure share, made by each side and verified offline."""
        assert self.session is not None and self.acked
        counts = []
        for name in IDENTITIES:
            headers = {"Authorization": f"Bearer {self.tokens[name]['auditor']}"}
            async with self.session.get(f"{self.url(name)}/v1/audit/evidence/{self.acked}", headers=headers) as r:
                raw = await r.read()
                if r.status != 200:
                    raise RuntimeError(f"evidence from {name}: HTTP {r.status} {raw[:300]!r}")
            path = self.root / f"evidence-{name}.jsonl"
            path.write_bytes(raw)
            report = verify_evidence(raw.splitlines(keepends=True))
            if report.ack_status != "processed" or any(lp.cosigned_by is None for lp in report.logs):
                raise RuntimeError(f"evidence from {name} lacks the ack or a cosignature: {report.to_dict()}")
            counts.append(f"{name} {len(report.entries)} entries")
        return (
            f"{self.acked[:13]}…: document, receipt, ack and both logs' entries, each proven into a "
            f"checkpoint the other side cosigned ({', '.join(counts)})"
        )

    async def bad_input(self) -> str:
        us, cn = IDENTITIES
        status, prob = await self.call(
            us,
            "POST",
            "/v1/messages",
            body={"type": "seizure-share", "to": cn, "body": {"case_reference": 1}},
        )
        if status != 422 or "field" not in prob:
            raise RuntimeError(f"expected a 422 problem naming a field, got {status} {prob}")
        status2, _ = await self.call(us, "GET", "/v1/admin/keys", role="agency")
        if status2 != 403:
            raise RuntimeError(f"agency token reached an admin endpoint: {status2}")
        return f"invalid body → {status} {prob['code']} at {prob['field']}; agency on admin → 403"

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.pair is not None:
            await self.pair.stop_all()

    async def run(self) -> bool:
        us, cn = IDENTITIES
        self.console.print(f"[bold]customs-gateway demo[/] in {self.root}")
        try:
            if not await self.step("start two gateways", self.start):
                return False
            await self.step(f"{us} → {cn}: every message type", lambda: self.exchange(us, cn))
            await self.step(f"{cn} → {us}: every message type", lambda: self.exchange(cn, us))
            await self.step(f"{us} → {cn}: a training guide of a few MB (files)", self.training_guide)
            await self.step("business acknowledgement", self.replay_and_ack)
            await self.step("agreements: follow-up questions and a joint operation", self.agreement_flows)
            await self.step("agreements: handling terms and consent for onward transfer", self.consent_flow)
            await self.step("key rotation mid-stream", self.rotation_mid_stream)
            await self.step("checkpoints cosigned", self.cosign)
            await self.step("audit export and offline verify", self.audit)
            await self.step("evidence for one message", self.evidence)
            await self.step("refusals are clear", self.bad_input)
            await self.step("retention: a legal hold, two days later disposal", self.retention)
        finally:
            await self.stop()
        return all(s.ok for s in self.steps)

    def summary(self) -> Table:
        table = Table(title="demo summary")
        table.add_column("step")
        table.add_column("result")
        table.add_column("seconds", justify="right")
        table.add_column("detail")
        for s in self.steps:
            table.add_row(s.name, "[green]ok[/]" if s.ok else "[red]FAILED[/]", f"{s.seconds:.2f}", s.detail)
        return table


def sample(msg_type: str) -> dict[str, Any]:
    """The worked example's sample body of a message type (`keys-example/messages/`)."""
    body: dict[str, Any] = json.loads((example_dir() / "messages" / f"{msg_type}.json").read_text(encoding="utf-8"))
    return body


def training_guide(size: int, title: str) -> bytes:
    """`size` bytes of a generated PDF-like training guide (a PDF header, then numbered lines)."""
    out = bytearray(f"%PDF-1.4\n% {title}\n".encode())
    line = 0
    while len(out) < size:
        line += 1
        out += f"{line:07d} Identify counterfeit goods posing health and safety risks / 识别侵权假冒商品\n".encode()
    return bytes(out[:size])


def run(args: argparse.Namespace) -> int:
    console = Console()
    log_path = None
    with tempfile.TemporaryDirectory(prefix="customs-gateway-demo-") as tmp:
        root = Path(args.dir) if args.dir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        log_path = root / "demo-gateways.log"
        with log_path.open("w", encoding="utf-8") as log_file:
            configure_logging("json", "info", stream=log_file)
            demo = Demo(root, console)
            ok = asyncio.run(demo.run())
        if args.json:
            print(json.dumps([s.__dict__ for s in demo.steps], indent=2, ensure_ascii=False))
        else:
            console.print(demo.summary())
            console.print("[green]every step held[/]" if ok else "[red]a step failed[/]")
    return 0 if ok else 1
