"""`customs-gateway bench --quick --json` runs every row and reports positive figures.

Tiny windows and a small queue keep it well under a minute; the figures themselves are not
judged here (a CI machine is too noisy for that), only that each row was measured. The RabbitMQ
row may be skipped, with a reason, when aio-pika or the broker is not available, and the
PostgreSQL row when the test suite's PostgreSQL is not reachable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import urllib.parse
from typing import Any

ROWS = (
    "ceiling",
    "gateway",
    "gateway_batch",
    "gateway_pg",
    "latency",
    "ratio",
    "cpu_multiple",
    "cpu_floor",
    "machine_share",
    "rabbitmq",
    "rss",
    "rss_queued",
    "audit_verify",
    "file_ceiling",
    "file_e2e",
    "file_rss",
    "file_resume",
)


def _rabbitmq_available() -> bool:
    if importlib.util.find_spec("aio_pika") is None:
        return False
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def _postgres_available() -> bool:
    """Whether the PostgreSQL of the gateway_pg row (the test suite's) accepts connections."""
    parts = urllib.parse.urlsplit(os.environ.get("CUSTOMS_GATEWAY_TEST_PG_DSN") or "postgresql://127.0.0.1:5432/test")
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=1):
            return True
    except OSError:
        return False


def test_quick_bench_measures_every_row() -> None:
    cmd = [sys.executable, "-m", "customs_gateway.cli.main", "bench", "--quick", "--json"]
    cmd += ["--seconds", "1", "--rate", "100", "--queued", "2000", "--audit-entries", "1200", "--file-mib", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["schema"] == "customs-gateway/bench/v1"
    assert result["machine"]["cpus"] >= 1 and result["machine"]["python"]
    rows = result["rows"]
    assert tuple(rows) == ROWS
    for key, row in rows.items():
        if (key == "rabbitmq" and not _rabbitmq_available()) or (key == "gateway_pg" and not _postgres_available()):
            assert row["status"] == "skipped" and row["note"], row
            continue
        assert row["status"] == "ok", row
        assert row["value"] > 0 or key in ("file_rss", "file_resume"), row
    assert rows["gateway"]["details"]["delivered"] > 0
    assert rows["gateway_batch"]["details"]["delivered"] > 0 and not rows["gateway_batch"]["details"]["never_delivered"]
    assert rows["gateway"]["details"]["drain_seconds"] >= 0
    # The logic-alone row delivered every message it submitted (in full delivery batches), and
    # its parts add up to its total.
    floor = rows["cpu_floor"]["details"]
    assert floor["messages"] == 400 and floor["requests_to_peer"] == 2, floor
    parts = floor["sender_submit_us"] + floor["sender_delivery_us"] + floor["receiver_us"]
    assert abs(parts - floor["cpu_us_per_message"]) < 1, floor
    # The ceiling is read before and after the end-to-end window; the row is their mean.
    before, after = rows["ceiling"]["details"]["readings"]
    assert before > 0 and after > 0 and rows["ceiling"]["value"] == round((before + after) / 2, 1)
    assert rows["ratio"]["value"] == round(rows["gateway"]["value"] / rows["ceiling"]["value"], 3)
    if rows["gateway_pg"]["status"] == "ok":
        assert rows["gateway_pg"]["details"]["delivered"] > 0 and not rows["gateway_pg"]["details"]["never_delivered"]
    latency = rows["latency"]["details"]["delivered"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert rows["rss_queued"]["details"]["pending_seen"] == 2000
    assert rows["audit_verify"]["details"]["entries"] == 1200
    e2e = rows["file_e2e"]["details"]
    assert e2e["bytes"] == 8 << 20 and e2e["ratio_to_ceiling"] > 0
    resume = rows["file_resume"]["details"]
    assert (
        resume["relayed_at_cut"] >= resume["ciphertext_bytes"] // 2
        and resume["relayed_bytes"] >= resume["ciphertext_bytes"]
    )
