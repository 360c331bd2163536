"""Commands the docs give people to run do what the docs say."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from customs_gateway.core.bundle import SignedBundle
from customs_gateway.pair import example_dir

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_quickstart_fingerprint_command_prints_what_keys_export_prints() -> None:
    text = (DOCS / "quickstart.md").read_text(encoding="utf-8")
    line = next(ln for ln in text.splitlines() if ln.startswith("python3 -c ") and "sha256" in ln)
    argv = shlex.split(line)
    assert argv[0] == "python3" and argv[-1].endswith(".bundle.json")
    for name in ("US-CBP", "CN-GACC"):
        bundle = example_dir() / name / "bundle.json"
        out = subprocess.run([sys.executable, *argv[1:-1], str(bundle)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == SignedBundle.from_bytes(bundle.read_bytes()).fingerprint()
        assert re.fullmatch(r"([0-9A-F]{4} ){15}[0-9A-F]{4}", out.stdout.strip())
