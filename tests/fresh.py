"""Run Python in a fresh interpreter: for tests of what importing a module loads."""

from __future__ import annotations

import subprocess
import sys


def fresh_python(code: str) -> str:
    """What `code` prints when run by a new interpreter of this environment (stripped)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()
