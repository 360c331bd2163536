"""`customs-gateway demo` from the built wheel, installed in a fresh venv outside the checkout
(issue 16): the example identities ship inside the package; nothing is read from the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("CUSTOMS_GATEWAY_CONFIG", None)
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    dist, venv, run = tmp_path / "dist", tmp_path / "venv", tmp_path / "run"
    run.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(dist), str(ROOT)], tmp_path)
    (wheel,) = dist.glob("customs_gateway-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "--quiet", str(wheel)], tmp_path)
    where = _run([str(py), "-c", "import customs_gateway; print(customs_gateway.__file__)"], run).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    shipped = Path(where).parent / "keys-example"
    assert (shipped / "US-CBP" / "bundle.json").is_file() and (shipped / "README.md").is_file()
    demo = _run([str(venv / "bin" / "customs-gateway"), "demo"], run)
    assert "every step held" in demo.stdout, demo.stdout[-2000:]
