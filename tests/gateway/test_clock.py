"""A gateway whose clock is behind its own audit log refuses to start (DESIGN §11), unless the
administrator says so (`accept_clock`, `serve --accept-clock`); entries it then writes are
stamped with the log's last time and keep their own clock reading."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from customs_gateway.core.audit import AuditEntry
from customs_gateway.core.clock import FixedClock
from customs_gateway.service.pair import LocalPair, prepare_pair
from customs_gateway.service.server import ClockBehind, GatewayServer

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


class AheadClock:
    """The system clock, `seconds` ahead (a peer whose clock runs fast)."""

    def __init__(self, seconds: float) -> None:
        self.delta = dt.timedelta(seconds=seconds)

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc) + self.delta


async def test_skew_against_the_peer_is_measured_from_signed_timestamps(tmp_path: Path) -> None:
    import aiohttp

    from customs_gateway.service.gateway import issue_token

    from .conftest import CN, sample

    lp = LocalPair(prepare_pair(tmp_path))
    await lp.start(US)
    await lp.start(CN, clock=AheadClock(200))  # inside the 300 s window, beyond half of it
    try:
        us, cn = lp.servers[US].gateway, lp.servers[CN].gateway
        _, us_token = await issue_token(us.store, us.clock, "agency", "t", "test")
        _, admin = await issue_token(us.store, us.clock, "admin", "a", "test")
        _, cn_token = await issue_token(cn.store, cn.clock, "agency", "t", "test")
        with capture_logs() as logs:
            async with aiohttp.ClientSession() as s:
                for url, tok, to in ((lp.homes[US].local_url, us_token, CN), (lp.homes[CN].local_url, cn_token, US)):
                    body = {"type": "seizure-share", "to": to, "body": sample("seizure-share")}
                    async with s.post(url + "/v1/messages", json=body, headers={"Authorization": f"Bearer {tok}"}) as r:
                        assert r.status == 202, await r.text()
                for _ in range(400):
                    if us.peer_clock.samples >= 2:
                        break
                    await asyncio.sleep(0.05)
                async with s.get(
                    lp.homes[US].local_url + "/v1/admin/peers", headers={"Authorization": f"Bearer {admin}"}
                ) as r:
                    peers = (await r.json())["peers"][0]
                async with s.get(lp.homes[US].local_url + "/metrics") as r:
                    metrics = await r.text()
        assert 195 <= peers["clock_offset_seconds"] <= 205, peers
        assert peers["clock_offset_measured_at"] is not None
        assert "customs_gateway_peer_clock_offset_seconds" in metrics
        warned = [e for e in logs if e["event"] == "peer.clock_skew"]
        # Each side warns once about the other (both run in this process), however many readings.
        assert sorted((e["peer"], e["offset_seconds"] > 0) for e in warned) == [(CN, True), (US, False)]
    finally:
        await lp.stop_all()
