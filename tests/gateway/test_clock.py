"""A gateway whose clock is behind its own audit log refuses to start (DESIGN §11), unless the
administrator says so (`accept_clock`, `serve --accept-clock`); entries it then writes are
stamped with the log's last time and keep their own clock reading."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.clock import FixedClock
from customs_gateway.pair import LocalPair, prepare_pair
from customs_gateway.server import ClockBehind, GatewayServer

from .conftest import US

T = dt.datetime(2026, 12, 3, 15, 24, 53, tzinfo=dt.timezone.utc)


async def test_a_clock_behind_the_log_refuses_to_start_unless_accepted(tmp_path: Path) -> None:
    lp = LocalPair(prepare_pair(tmp_path))
    server = await lp.start(US, clock=FixedClock(T))
    await server.gateway.store.append_audit([AuditEntry(T, "token_issued", "system", detail={"token_id": "t"})])
    await lp.stop(US)

    behind = FixedClock(T - dt.timedelta(minutes=10))
    cfg, identity = lp.configs[US], lp.identity(US)
    with pytest.raises(ClockBehind) as info:
        await GatewayServer(cfg, identity, clock=behind, passphrase=lp.passphrase).start()
    assert info.value.code == "clock.behind_log" and "600 s behind" in info.value.detail

    # Within the skew window it starts as usual.
    near = GatewayServer(cfg, identity, clock=FixedClock(T - dt.timedelta(seconds=200)), passphrase=lp.passphrase)
    await near.start()
    await near.stop()

    accepted = GatewayServer(cfg, identity, clock=behind, passphrase=lp.passphrase, accept_clock=True)
    with capture_logs() as logs:
        await accepted.start()
    try:
        assert any(e["event"] == "gateway.clock_behind_log" for e in logs)
        await accepted.gateway.store.append_audit([AuditEntry(behind.now(), "token_issued", "system")])
        size, _ = await accepted.gateway.store.audit_head()
        ((_, data),) = await accepted.gateway.store.audit_entries(size - 1, size)
        written = AuditEntry.from_bytes(data)
        assert written.at == T and written.detail["clock_at"] == "2026-12-03T15:14:53.000Z"
    finally:
        await accepted.stop()
