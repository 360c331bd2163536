"""G5 with real processes: SIGKILL the sender or the receiver at random moments under load.

Two `customs-gateway serve` processes (SQLite, WAL, synchronous=FULL) and a back-end submitting
a steady stream. At the end every message that got a 202 is in the peer's inbox exactly once, in
order, with a receipt that verifies under the peer's public keys and binds its document digest;
nothing else is there; both audit logs parse, match their signed checkpoints, name every message
exactly once, and pass the offline verifier. `benchmarks/crash_drill.py` runs the long version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .drill import CrashDrillConfig, run_crash_drill


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    cfg = CrashDrillConfig(seed=20261124, kills=10)
    rep = run_crash_drill(tmp_path, cfg, progress=print)
    print("\n".join(["", "crash drill:", *rep.lines()]))
    assert sum(rep.kills.values()) >= 10
    assert rep.accepted > 50, "too little traffic to mean anything"
    assert not rep.refused and not rep.unresolved, (rep.refused[:3], rep.unresolved[:3])
    d = rep.delivery
    assert d.duplicates == 0 and not d.missing and not d.unexpected, (d.missing[:5], d.unexpected[:5])
    assert d.inbox == d.delivered == rep.accepted
    assert d.out_of_order == 0
    assert d.receipts_verified == rep.accepted, d.receipt_failures[:5]
    assert not d.body_mismatches
    assert rep.audit_exactly_once == [], rep.audit_exactly_once[:10]
    for audit in rep.audit.values():
        assert audit.ok, (audit.name, audit.problems)
    assert rep.exit_codes == {"US-CBP": 0, "CN-GACC": 0}
    assert rep.ok
