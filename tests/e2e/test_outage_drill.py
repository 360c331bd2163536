"""Peer outage under load, with real processes: the queue grows, retries show, then it all drains in order.

The receiving gateway is stopped while a back-end keeps submitting to the sender. During the
outage the sender's `GET /v1/admin/peers` shows the queue growing and the head message shows its
retries (`attempts`, `last_error`, history); after the peer comes back the queue drains to zero
and the peer's inbox holds every accepted message once, in submission order (per-peer order).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .drill import CN, US, ProcessPair, Submitter, check_delivery, drained, wait_until

OUTAGE_SECONDS = 4.0


@pytest.mark.slow
def test_peer_outage_queue_grows_retries_then_drains_in_order(tmp_path: Path) -> None:
    pp = ProcessPair.prepare(tmp_path)
    pp.start_all()
    sub = Submitter(pp.procs[US].url, pp.tokens[US]["agency"], to=CN, interval=0.02, prefix="OUTAGE")
    try:
        sub.start()
        wait_until("traffic before the outage", lambda: len(sub.accepted) >= 20, 20)
        wait_until("the first deliveries", lambda: len(pp.inbox(CN)) >= 10, 20)
        assert pp.procs[CN].stop() == 0
        down_at = time.monotonic()
        time.sleep(0.3)
        depths = []
        while time.monotonic() - down_at < OUTAGE_SECONDS:
            depths.append(pp.queue_depth(US))
            time.sleep(0.4)
        assert depths == sorted(depths), f"the queue shrank while the peer was down: {depths}"
        assert depths[-1] > depths[0] + 20, depths

        status, peers = pp.call(US, "GET", "/v1/admin/peers", role="admin")
        assert status == 200
        assert peers["peers"][0]["oldest_queued_at"] is not None
        head = None
        for a in sorted(sub.accepted, key=lambda a: a.seq):
            _, m = pp.call(US, "GET", f"/v1/messages/{a.id}")
            if m["status"] != "delivered":
                head = m
                break
        assert head is not None
        assert head["status"] == "retrying", head
        assert head["attempts"] >= 3, head
        assert "unreachable" in (head["last_error"] or ""), head
        assert head["next_attempt_at"] is not None
        retries = [h for h in head["history"] if h["status"] == "retrying" and "unreachable" in h["detail"]]
        assert len(retries) >= 3, head["history"]

        pp.procs[CN].start()
        up_at = time.monotonic()
        time.sleep(1.0)  # traffic continues after the peer is back
        sub.halt()
        ids = [a.id for a in sub.accepted]
        wait_until("the queue to drain", lambda: drained(pp, ids), 60, every=0.2)
        drain_seconds = time.monotonic() - up_at
        status, peers = pp.call(US, "GET", "/v1/admin/peers", role="admin")
        assert peers["peers"][0]["queue_depth"] == 0
        assert peers["peers"][0]["oldest_queued_at"] is None

        rep = check_delivery(pp, sub.accepted)
        inbox_ids = [m["id"] for m in pp.inbox(CN)]
        assert inbox_ids == [a.id for a in sorted(sub.accepted, key=lambda a: a.n)], "per-peer order was not kept"
        assert rep.ok, rep
        print(
            f"\noutage drill: accepted {len(sub.accepted)}, queue depth during the outage {depths[0]} -> "
            f"{depths[-1]}, head attempts {head['attempts']} ({head['last_error']}), drained "
            f"{rep.inbox} in order {drain_seconds:.1f} s after the restart (incl. 1 s more traffic), "
            f"receipts verified {rep.receipts_verified}, re-sent envelopes {rep.resends}"
        )
    finally:
        if sub.is_alive():
            sub.halt()
        codes = pp.stop_all()
    assert codes == {US: 0, CN: 0}
