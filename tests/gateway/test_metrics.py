"""Prometheus metrics: one registry per gateway, values read at scrape time, the latency histogram."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from customs_gateway.http.metrics import metrics_for, observe_receipt_latency, watch_cosigning

from .conftest import CN, US, Pair
from .ops_routes import ops_app

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def scrape(gw: Any) -> tuple[str, Samples]:
    async with TestClient(TestServer(ops_app(gw))) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return text, parse(text)


async def test_scrape_reflects_an_exchange(pair: Pair) -> None:
    us, cn = pair.gw(US), pair.gw(CN)
    status, res = await pair.apis[US].submit("seizure-share")
    assert status == 202, res
    await pair.apis[US].wait_status(res["id"], {"delivered"})

    _, s = await scrape(us)
    assert value(s, "customs_gateway_info", identity=US, peer=CN) == 1
    assert value(s, "customs_gateway_messages_submitted_total") == 1
    assert value(s, "customs_gateway_messages_delivered_total") == 1
    assert value(s, "customs_gateway_queue_depth", peer=CN) == 0
    assert value(s, "customs_gateway_queue_oldest_age_seconds", peer=CN) == 0
    assert value(s, "customs_gateway_store_up") == 1
    assert value(s, "customs_gateway_audit_entries") >= 3  # submitted, sent, delivered
    for use in ("signing", "encryption", "witness", "tls"):
        assert value(s, "customs_gateway_key_expiry_seconds", use=use) > 0

    _, s = await scrape(cn)
    assert value(s, "customs_gateway_messages_received_total") == 1
    assert value(s, "customs_gateway_sequence_gaps_total", peer=US) == 0
    assert value(s, "customs_gateway_sequence_high_water", peer=US) == 1


async def test_refusals_are_labelled_by_direction_and_code(pair: Pair) -> None:
    gw = pair.gw(US)
    gw.counters.refused_in["replay.skew"] = 2
    gw.counters.refused_out["schema.required"] = 1
    _, s = await scrape(gw)
    assert value(s, "customs_gateway_refused_total", direction="inbound", code="replay.skew") == 2
    assert value(s, "customs_gateway_refused_total", direction="outbound", code="schema.required") == 1


async def test_queue_age_and_checkpoint_age_come_from_the_store(pair: Pair) -> None:
    await pair.lp.stop(CN)  # the peer is down: our message stays queued
    us = pair.gw(US)
    status, _ = await pair.apis[US].submit("seminar-notice")
    assert status == 202
    server = pair.lp.servers[US]
    assert server.checkpointer is not None
    await server.checkpointer.checkpoint_now()
    _, s = await scrape(us)
    assert value(s, "customs_gateway_queue_depth", peer=CN) == 1
    assert value(s, "customs_gateway_queue_oldest_age_seconds", peer=CN) >= 0
    assert value(s, "customs_gateway_checkpoint_size") >= 1
    assert value(s, "customs_gateway_checkpoint_age_seconds") >= 0


async def test_cosign_counts_are_reported_once_a_checkpointer_is_watched(pair: Pair) -> None:
    server = pair.lp.servers[US]
    gw = server.gateway
    watch_cosigning(gw, None)
    text, _ = await scrape(gw)
    assert "customs_gateway_cosign_failures_total" not in text
    assert server.checkpointer is not None
    watch_cosigning(gw, server.checkpointer)
    server.checkpointer.status.failures = 3
    _, s = await scrape(gw)
    assert value(s, "customs_gateway_cosign_failures_total") == 3
    assert value(s, "customs_gateway_checkpoints_cosigned_total") >= 0


async def test_two_gateways_in_one_process_have_separate_registries(pair: Pair) -> None:
    us, cn = pair.gw(US), pair.gw(CN)
    assert metrics_for(us) is metrics_for(us)
    assert metrics_for(us).registry is not metrics_for(cn).registry
    us.counters.submitted, cn.counters.submitted = 7, 11
    _, s_us = await scrape(us)
    _, s_cn = await scrape(cn)
    assert value(s_us, "customs_gateway_messages_submitted_total") == 7
    assert value(s_cn, "customs_gateway_messages_submitted_total") == 11


async def test_receipt_latency_histogram(pair: Pair) -> None:
    gw = pair.gw(US)
    for seconds in (0.02, 0.3, 4.0, 7200.0, -1.0):
        observe_receipt_latency(gw, seconds)
    _, s = await scrape(gw)
    name = "customs_gateway_receipt_latency_seconds"
    assert value(s, f"{name}_count") == 5
    assert value(s, f"{name}_sum") == 0.02 + 0.3 + 4.0 + 7200.0  # a negative (clock step) counts as 0
    assert value(s, f"{name}_bucket", le="0.05") == 2
    assert value(s, f"{name}_bucket", le="0.5") == 3
    assert value(s, f"{name}_bucket", le="3600.0") == 4
    assert value(s, f"{name}_bucket", le="+Inf") == 5
    _, other = await scrape(pair.gw(CN))
    assert value(other, f"{name}_count") == 0


async def test_render_without_store_values_reports_the_store_down(pair: Pair) -> None:
    gw = pair.gw(US)
    s = parse(metrics_for(gw).render(None).decode())
    assert value(s, "customs_gateway_store_up") == 0
    assert value(s, "customs_gateway_messages_submitted_total") == 0
    assert not any(name == "customs_gateway_queue_depth" for name, _ in s)


async def test_refusal_series_exist_before_the_first_refusal(pair: Pair) -> None:
    from customs_gateway.core.refusals import REFUSALS

    _, s = await scrape(pair.gw(US))
    for direction in ("inbound", "outbound"):
        for code in REFUSALS:
            assert value(s, "customs_gateway_refused_total", direction=direction, code=code) == 0
