"""Envelope crypto in worker processes: same answers as in a thread, every refusal kept, order kept,
a killed worker survived, and real gateways actually using the processes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from customs_gateway.core.clock import FixedClock, UUID7Source
from customs_gateway.core.encoding import b64url, json_bytes, unb64url
from customs_gateway.core.envelope import Document, DocumentHead, Envelope, SignedDocument, build_envelope
from customs_gateway.service.crypto_pool import MIN_PROCESS_BATCH, CryptoPool
from customs_gateway.service.crypto_workers import (
    BadVerdict,
    Built,
    OpenKeys,
    ReceiptVerdict,
    RefusalVerdict,
    Refused,
    SealKeys,
    build_batch,
    open_batch,
)
from customs_gateway.service.pair import LocalPair, prepare_pair
from customs_gateway.service.procpool import DirectProcessPool
from customs_gateway.startup.agreement import builtin_profile
from customs_gateway.startup.keystore import Identity
from customs_gateway.store.base import Incoming
from tests.gateway.conftest import CN, US, Pair, sample, terms

NOW = dt.datetime(2026, 11, 24, 10, 0, 0, tzinfo=dt.timezone.utc)
N = 3 * MIN_PROCESS_BATCH + 1  # three chunks' worth, not a multiple of the worker count


@pytest.fixture(scope="module")
def idents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    lp = LocalPair(prepare_pair(tmp_path_factory.mktemp("cw")))
    return {US: lp.identity(US), CN: lp.identity(CN)}


@pytest.fixture
async def pool() -> Any:
    p = CryptoPool(2)
    await p.start()
    yield p
    p.close()


def _items(sender: Identity, n: int, now: dt.datetime = NOW) -> list[tuple[bytes, int, int, bytes | None]]:
    ids = UUID7Source(FixedClock(now))
    key = sender.active_signing_key(now)
    out = []
    for i in range(n):
        doc = Document(
            ids.new_id(), US, CN, "seizure-share", now, sample("seizure-share"), handling=terms("seizure-share", now)
        )
        out.append((SignedDocument.create(doc, key).raw, i + 1, 1, None))
    return out


def _seal_keys(us: Identity, cn: Identity, now: dt.datetime = NOW) -> SealKeys:
    return SealKeys.of(us.active_signing_key(now), cn.public_keys().encryption_key(now))


def _open_keys(me: Identity, peer: Identity, now: dt.datetime = NOW, skew: float = 300.0) -> OpenKeys:
    return OpenKeys(
        me=me.name,
        peer_bundle=peer.bundle.bundle.to_bytes(),
        decryption=tuple((k.alg, k.seed) for k in me.decryption.values()),
        receipt_seed=me.active_signing_key(now).seed,
        skew_seconds=skew,
        index_key=bytes(32),
        profile=builtin_profile().data,
    )


def _envelopes(built: list[tuple[bytes, bytes, str, bool]]) -> list[dict[str, Any]]:
    return [json.loads(b[0]) for b in built]


async def test_processes_and_thread_agree_and_keep_order(pool: CryptoPool, idents: dict[str, Identity]) -> None:
    us, cn = idents[US], idents[CN]
    items = _items(us, N)
    built = await pool.map(build_batch, _seal_keys(us, idents[CN]), NOW, items)
    assert pool.batches_in_processes == 1
    envs = _envelopes(built)
    keys = _open_keys(cn, us)
    in_procs = await pool.map(open_batch, keys, NOW, envs)
    in_thread = open_batch(keys, NOW, envs)
    assert pool.batches_in_processes == 2
    assert all(isinstance(r, Incoming) for r in in_procs)
    # Ed25519 receipts are deterministic: the two paths produce identical results, in order.
    assert in_procs == in_thread
    docs = [Document.from_bytes(SignedDocument.from_bytes(raw).document_bytes) for raw, *_ in items]
    assert [r.id for r in in_procs if isinstance(r, Incoming)] == [d.id for d in docs]
    assert [r.seq for r in in_procs if isinstance(r, Incoming)] == list(range(1, N + 1))


async def test_ciphertext_of_an_earlier_attempt_is_reused(pool: CryptoPool, idents: dict[str, Identity]) -> None:
    us = idents[US]
    first = await pool.map(build_batch, _seal_keys(us, idents[CN]), NOW, _items(us, N))
    retry = [(raw, seq, 2, first[i][1]) for i, (raw, seq, _, _) in enumerate(_items(us, N))]
    # _items makes fresh documents: reuse must carry the given ciphertext through unchanged
    again = await pool.map(build_batch, _seal_keys(us, idents[CN]), NOW, retry)
    assert [b[1] for b in again] == [b[1] for b in first]
    assert all(json.loads(b[0])["ciphertext"] == b64url(b[1]) for b in again)


def _flip(s: str) -> str:
    raw = bytearray(unb64url(s))
    raw[len(raw) // 2] ^= 0x01
    return b64url(bytes(raw))


FILE = {
    "file_id": "0192f0a0-0000-7000-8000-000000000001",
    "filename": "a.pdf",
    "media_type": "application/pdf",
    "size": 3,
    "sha256": "ab" * 32,
    "key": "A" * 43,
}


@pytest.mark.parametrize(
    ("msg_type", "body", "names_files"),
    [
        ("seizure-share", sample("seizure-share"), False),
        ("seizure-share", {**sample("seizure-share"), "files": [FILE]}, True),
        ("training-material", {**sample("training-material"), "files": [FILE]}, True),
        (
            "ack",
            {"message_id": "0192f0a0-0000-7000-8000-000000000002", "status": "processed", "document_sha256": "cd" * 32},
            False,
        ),
    ],
)
def test_build_batch_builds_the_envelope_build_envelope_builds(
    idents: dict[str, Identity], msg_type: str, body: dict[str, Any], names_files: bool
) -> None:
    # The workers read only the head of our own signed document (DocumentHead.of_own); the
    # envelope must be byte for byte the one build_envelope makes from the whole Document.
    us, cn = idents[US], idents[CN]
    key, rcpt = us.active_signing_key(NOW), cn.public_keys().encryption_key(NOW)
    handling = terms(msg_type, NOW) if msg_type != "ack" else None
    doc = Document(UUID7Source(FixedClock(NOW)).new_id(), US, CN, msg_type, NOW, body, handling=handling)
    signed = SignedDocument.create(doc, key)
    env, _, ct = build_envelope(doc, seq=7, sent_at=NOW, attempt=2, signing_key=key, recipient_key=rcpt, signed=signed)
    [(raw, ct_again, kid, names)] = build_batch(_seal_keys(us, cn), NOW, [(signed.raw, 7, 2, ct)])
    assert raw == json_bytes(env.to_dict()) and ct_again == ct and kid == rcpt.kid and names is names_files
    head, _ = DocumentHead.of_own(signed.raw)
    assert head == DocumentHead(doc.id, US, CN, msg_type, doc.created_at)
    # Sealed afresh (no ciphertext to reuse), the peer opens it to the same document.
    [(fresh, _, _, _)] = build_batch(_seal_keys(us, cn), NOW, [(signed.raw, 7, 1, None)])
    [opened] = open_batch(_open_keys(cn, us), NOW, [json.loads(fresh)])
    assert not isinstance(opened, Refused), opened
    assert opened.signed_document == signed.raw and opened.seq == 7


async def test_every_refusal_survives_the_process_hop(pool: CryptoPool, idents: dict[str, Identity]) -> None:
    us, cn = idents[US], idents[CN]
    envs = _envelopes(await pool.map(build_batch, _seal_keys(us, idents[CN]), NOW, _items(us, N)))
    bad = [dict(e) for e in envs]
    bad[1]["ciphertext"] = _flip(bad[1]["ciphertext"])  # tampered ciphertext: outer signature breaks
    bad[2]["signature"] = _flip(bad[2]["signature"])  # bad signature
    bad[3]["header"] = bad[3]["header"][:-4]  # truncated
    bad[4] = {"header": 1}  # garbage
    bad[5] = "not an envelope"
    keys = _open_keys(cn, us)
    got = await pool.map(open_batch, keys, NOW, bad)
    want = open_batch(keys, NOW, bad)
    assert got == want
    assert isinstance(got[0], Incoming)
    codes = [r.code if isinstance(r, Refused) else "ok" for r in got[:6]]
    assert codes[0] == "ok"
    assert codes[1] == codes[2] == "signature.invalid"
    assert codes[3].startswith("decode.") and codes[4].startswith("decode.") and codes[5].startswith("decode.")
    assert isinstance(got[1], Refused) and got[1].message_id == json.loads(unb64url(envs[1]["header"]))["id"]
    assert got[1].error_class == "SignatureError"
    # the digest a refusal binds is `Envelope.digest` of what arrived, whether it opened or not
    for e, r in zip(bad[:4], got[:4], strict=True):
        assert (r.envelope_sha256 if isinstance(r, Refused | Incoming) else None) == Envelope.from_dict(e).digest
    # wrong recipient: US opening envelopes addressed to CN; stale: far outside the skew window
    wrong = await pool.map(open_batch, _open_keys(us, cn), NOW, envs)
    assert {r.code for r in wrong if isinstance(r, Refused)} == {"binding.sender"}
    late = NOW + dt.timedelta(hours=1)
    stale = await pool.map(open_batch, _open_keys(cn, us, late), late, envs)
    assert {r.code for r in stale if isinstance(r, Refused)} == {"replay.skew"} and len(stale) == N


def test_a_refusal_after_opening_names_the_message(idents: dict[str, Identity]) -> None:
    """Checks made once the envelope is open (here: a business document without handling terms)
    refuse it under the document's id and the digest of the envelope it came in."""
    us, cn = idents[US], idents[CN]
    doc = Document(UUID7Source(FixedClock(NOW)).new_id(), US, CN, "seizure-share", NOW, sample("seizure-share"))
    raw = SignedDocument.create(doc, us.active_signing_key(NOW)).raw
    env = _envelopes(build_batch(_seal_keys(us, cn), NOW, [(raw, 1, 1, None)]))[0]
    (got,) = open_batch(_open_keys(cn, us), NOW, [env])
    assert isinstance(got, Refused) and got.code == "handling.missing"
    assert got.message_id == doc.id and got.envelope_sha256 == Envelope.from_dict(env).digest


async def test_small_batches_stay_in_a_thread(pool: CryptoPool, idents: dict[str, Identity]) -> None:
    us = idents[US]
    await pool.map(build_batch, _seal_keys(us, idents[CN]), NOW, _items(us, MIN_PROCESS_BATCH - 1))
    assert (pool.batches_in_processes, pool.batches_in_threads) == (0, 1)


async def test_a_caller_may_send_even_one_envelope_to_the_processes(
    pool: CryptoPool, idents: dict[str, Identity]
) -> None:
    us, cn = idents[US], idents[CN]
    built = await pool.map(build_batch, _seal_keys(us, cn), NOW, _items(us, 1), processes_from=1)
    assert (pool.batches_in_processes, pool.batches_in_threads) == (1, 0)
    (got,) = open_batch(_open_keys(cn, us), NOW, _envelopes(built))
    assert isinstance(got, Incoming) and got.seq == 1
    # a threshold above the batch keeps it in the thread, whatever the default
    await pool.map(build_batch, _seal_keys(us, cn), NOW, _items(us, N), processes_from=N + 1)
    assert (pool.batches_in_processes, pool.batches_in_threads) == (1, 1)


async def _kill_a_worker(pool: CryptoPool) -> DirectProcessPool:
    """SIGKILL one of the pool's workers; the pool it belonged to."""
    procs = pool._procs
    assert procs is not None
    os.kill(procs.pids[0], signal.SIGKILL)
    await asyncio.sleep(0.2)
    return procs


async def _build(pool: CryptoPool, idents: dict[str, Identity]) -> list[Built]:
    """One batch of N envelopes from US to CN through `pool`."""
    us = idents[US]
    return await pool.map(build_batch, _seal_keys(us, idents[CN]), NOW, _items(us, N))


async def test_a_killed_worker_costs_one_batch_in_a_thread_then_a_fresh_pool(
    pool: CryptoPool, idents: dict[str, Identity]
) -> None:
    procs = await _kill_a_worker(pool)
    built = await _build(pool, idents)
    assert len(built) == N and pool.batches_in_threads == 1
    again = await _build(pool, idents)
    assert len(again) == N and pool.batches_in_processes == 1
    assert pool._procs is not None and pool._procs is not procs


async def test_a_batch_that_failed_on_a_broken_pool_leaves_the_fresh_pool_alone(
    pool: CryptoPool, idents: dict[str, Identity]
) -> None:
    broken = await _kill_a_worker(pool)
    await _build(pool, idents)  # in a thread; discards it
    await _build(pool, idents)  # a fresh pool
    fresh = pool._procs
    assert fresh is not None and fresh is not broken
    pool._discard(broken)  # what a second batch that had failed on `broken` does, late
    assert pool._procs is fresh
    assert len(await _build(pool, idents)) == N
    assert pool.batches_in_processes == 2


async def test_pool_off_runs_in_a_thread(idents: dict[str, Identity]) -> None:
    p = CryptoPool(0)
    try:
        built = await p.map(build_batch, _seal_keys(idents[US], idents[CN]), NOW, _items(idents[US], N))
        assert len(built) == N and (p.batches_in_processes, p.batches_in_threads) == (0, 1)
        assert p._procs is None
    finally:
        p.close()


async def test_gateways_deliver_through_the_worker_processes(pair: Pair) -> None:
    us, cn = pair.apis[US], pair.apis[CN]
    await pair.lp.stop(CN)  # queue a batch's worth, so it goes out as one batch to the processes
    ids = []
    for _ in range(N):
        status, res = await us.submit("seizure-share")
        assert status == 202, res
        ids.append(res["id"])
    await pair.lp.start(CN)
    for mid in ids:
        await us.wait_status(mid, {"delivered"})
    assert pair.gw(US).crypto.batches_in_processes >= 1
    assert pair.gw(CN).crypto.batches_in_processes >= 1
    status, inbox, _ = await cn.call("GET", "/v1/inbox?limit=100")
    assert status == 200
    assert [m["id"] for m in inbox["messages"]] == ids


async def test_the_sender_builds_a_lone_message_in_the_processes_and_judges_it_on_the_loop(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small batches are built off the sender's GIL (delivery.SENDER_PROCESSES_FROM); a small
    answer is judged on the event loop, with no hand-off (delivery.SENDER_JUDGE_INLINE_BELOW);
    the receiver opens a small batch in a thread, as the default has it."""
    sender, receiver = pair.gw(US).crypto, pair.gw(CN).crypto
    where: list[tuple[str, str]] = []
    real_run = sender._pool().run

    async def spied_run(fn: Any, *args: Any) -> Any:
        where.append((fn.__name__, "process"))
        return await real_run(fn, *args)

    monkeypatch.setattr(sender._pool(), "run", spied_run)
    before = (sender.batches_in_processes, sender.batches_in_threads, sender.batches_inline)
    before_receiver = receiver.batches_in_threads
    status, res = await pair.apis[US].submit("seizure-share")
    assert status == 202, res
    await pair.apis[US].wait_status(res["id"], {"delivered"})
    assert ("build_batch", "process") in where and ("judge_batch", "process") not in where, where
    assert sender.batches_in_processes > before[0] and sender.batches_in_threads == before[1]
    assert sender.batches_inline > before[2]
    assert receiver.batches_in_threads > before_receiver


async def test_a_batch_below_inline_below_runs_on_the_calling_thread(
    pool: CryptoPool, idents: dict[str, Identity]
) -> None:
    us, cn = idents[US], idents[CN]
    items = _items(us, 3)
    seen: list[str] = []

    def build_here(keys: SealKeys, now: dt.datetime, its: Any) -> list[Built]:
        seen.append(threading.current_thread().name)
        return build_batch(keys, now, its)

    got = await pool.map(build_here, _seal_keys(us, cn), NOW, items, processes_from=1, inline_below=4)
    assert seen == [threading.current_thread().name] and len(got) == 3
    assert (pool.batches_inline, pool.batches_in_processes, pool.batches_in_threads) == (1, 0, 0)
    # At the bound it is no longer inline: processes_from=1 sends it to the workers.
    await pool.map(build_batch, _seal_keys(us, cn), NOW, items, processes_from=1, inline_below=3)
    assert (pool.batches_inline, pool.batches_in_processes) == (1, 1)


def test_config_bounds(tmp_path: Path) -> None:
    from customs_gateway.core.errors import ConfigError
    from customs_gateway.startup.config import load_config, render_config

    homes = prepare_pair(tmp_path)
    cfg = load_config(homes[US].config_path, env={})
    assert cfg.performance.crypto_processes == 2
    assert "[performance]" in render_config(cfg)
    bad = msgspec.structs.replace(cfg, performance=msgspec.structs.replace(cfg.performance, crypto_processes=-1))
    homes[US].config_path.write_text(render_config(bad), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(homes[US].config_path, env={})
    assert e.value.field == "performance.crypto_processes"


_HOLDER = """
import asyncio, os, sys
from customs_gateway.service.crypto_pool import CryptoPool

async def main():
    pool = CryptoPool(2)
    await pool.start()
    print(" ".join(str(p) for p in pool._procs.pids), flush=True)
    await asyncio.sleep(60)

if __name__ == "__main__":
    asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        # Gone before the open (no file), or reaped between the open and the read (ESRCH):
        # the second happened once in CI while the killed gateway's workers exited.
        return False


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_killed_gateway_leaves_no_worker_behind(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    script = tmp_path / "holder.py"
    script.write_text(_HOLDER, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        workers = [int(p) for p in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        server = _parent(workers[0])
        assert server != proc.pid and _alive(server)  # the fork server between them
        proc.kill()  # SIGKILL: no clean-up runs in the gateway
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in [*workers, server]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in [*workers, server])
    finally:
        proc.kill()


async def test_judging_answers_in_processes(pool: CryptoPool, idents: dict[str, Identity]) -> None:
    """Receipts and refusals are verified in the workers; every forgery is "bad", as in a thread."""
    from customs_gateway.core.receipt import make_refusal
    from customs_gateway.service.crypto_workers import JudgeKeys, judge_batch

    us, cn = idents[US], idents[CN]
    envs = _envelopes(await pool.map(build_batch, _seal_keys(us, cn), NOW, _items(us, N)))
    opened = [r for r in open_batch(_open_keys(cn, us), NOW, envs) if isinstance(r, Incoming)]
    assert len(opened) == N
    results: list[Any] = [{"id": o.id, "status": "accepted", "receipt": json.loads(o.receipt)} for o in opened]
    items = [(o.id, o.document_sha256, o.envelope_sha256, r) for o, r in zip(opened, results, strict=True)]
    # forgeries: another message's receipt; a receipt for another document; one signed by us,
    # not the peer; neither receipt nor refusal; not an object
    items[1] = (*items[1][:3], results[2])
    items[2] = (items[2][0], bytes(32), items[2][2], results[2])
    forged = make_receipt_by(us, opened[3])
    items[3] = (*items[3][:3], {"receipt": forged})
    items[4] = (*items[4][:3], {"status": "accepted"})
    items[5] = (*items[5][:3], ["not", "an", "object"])

    def refusal_of(o: Incoming, envelope_sha256: bytes) -> Any:
        return make_refusal(
            message_id=o.id,
            sender=US,
            receiver=CN,
            code="schema.required",
            detail="x is required",
            retryable=False,
            refused_at=NOW,
            envelope_sha256=envelope_sha256,
            key=cn.active_signing_key(NOW),
        )

    refusal = refusal_of(opened[6], opened[6].envelope_sha256)
    items[6] = (*items[6][:3], {"refusal": refusal.to_dict()})
    # A refusal of another envelope (another attempt, or one forged under this id): not ours to record.
    items[7] = (*items[7][:3], {"refusal": refusal_of(opened[7], bytes(32)).to_dict()})
    keys = JudgeKeys(US, cn.bundle.bundle.to_bytes())
    got = await pool.map(judge_batch, keys, NOW, items)
    assert got == judge_batch(keys, NOW, items)
    assert got[0] == ReceiptVerdict(opened[0].receipt, NOW, got[0].kid)  # type: ignore[union-attr]
    assert got[1:6] == [
        BadVerdict("receipt.message_id"),
        BadVerdict("receipt.document_sha256"),
        BadVerdict("key.unknown"),  # our own key is not one of the peer's
        BadVerdict("peer.malformed_result"),
        BadVerdict("peer.malformed_result"),
    ]
    assert got[6] == RefusalVerdict(refusal.to_bytes(), "schema.required", got[6].detail, False)  # type: ignore[union-attr]
    assert got[7] == BadVerdict("refusal.envelope_sha256")
    assert all(isinstance(v, ReceiptVerdict) for v in got[8:])


def make_receipt_by(signer: Identity, o: Incoming) -> dict[str, Any]:
    from customs_gateway.core.receipt import make_receipt

    st = make_receipt(
        message_id=o.id,
        sender=US,
        receiver=CN,
        document_sha256=o.document_sha256,
        received_at=NOW,
        key=signer.active_signing_key(NOW),
    )
    return st.to_dict()


_UNGUARDED = """
import asyncio, datetime as dt, sys
from pathlib import Path

# No `if __name__ == "__main__"` guard: this top level must run once, not once per worker.
with open(sys.argv[1], "a", encoding="utf-8") as f:
    f.write("ran\\n")

from customs_gateway.service.crypto_pool import CryptoPool
from customs_gateway.service.crypto_workers import warm


async def main():
    pool = CryptoPool(2)
    await pool.start()
    assert await pool._procs.run(warm) == 0
    pool.close()

asyncio.run(main())
print("done", flush=True)
"""


def test_workers_do_not_rerun_an_unguarded_main_script(tmp_path: Path) -> None:
    """multiprocessing re-runs the parent's main script in spawned workers unless guarded; a test
    runner or tool embedding a gateway must not see its top level run again in each worker."""
    import subprocess
    import sys

    script, marks = tmp_path / "unguarded.py", tmp_path / "marks.txt"
    script.write_text(_UNGUARDED, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script), str(marks)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert marks.read_text(encoding="utf-8") == "ran\n"
