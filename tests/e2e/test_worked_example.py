"""docs/quickstart.md §3 "Both sides on one machine, by hand": the shell block runs as written.

Only what a second run on a shared machine needs differs: free ports instead of 8080/8443/8081/8444
and a temporary directory instead of /tmp/cgw. Two real `serve` processes, real mutual TLS, the
CLI for everything; the message must arrive, be listed and acknowledged.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from customs_gateway.service.pair import free_port

ROOT = Path(__file__).resolve().parents[2]


def _block() -> str:
    text = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    after = text.split("<!-- worked-example", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def test_the_worked_example_runs_as_written(tmp_path: Path) -> None:
    script = _block()
    for port in ("8080", "8443", "8081", "8444"):
        script = re.sub(rf"\b{port}\b", str(free_port()), script)
    script = script.replace("/tmp/cgw", str(tmp_path / "cgw"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("CUSTOMS_GATEWAY_TOKEN", None)
    env.pop("CUSTOMS_GATEWAY_CONFIG", None)
    proc = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    logs = "".join(
        (tmp_path / "cgw" / name).read_text(errors="replace")[-3000:]
        for name in ("us.log", "cn.log")
        if (tmp_path / "cgw" / name).exists()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    out = proc.stdout
    sent = re.search(r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}) delivered", out)
    assert sent, out + proc.stderr
    assert sent.group(1) in out.split(sent.group(0), 1)[1], "the inbox lists the message sent"
    assert "US-CBP" in out and "seizure-share" in out
