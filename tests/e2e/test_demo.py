"""The README's first command: `customs-gateway demo` must hold every step and exit 0."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_exits_zero_and_every_step_held() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "customs_gateway.cli.main", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = json.loads(proc.stdout[proc.stdout.index("[\n") :])
    assert len(steps) >= 7
    assert all(s["ok"] for s in steps), steps
    names = " ".join(s["name"] for s in steps)
    for expected in (
        "every message type",
        "acknowledgement",
        "follow-up questions and a joint operation",
        "rotation",
        "cosigned",
        "evidence for one message",
        "a training guide of a few MB",
    ):
        assert expected in names
