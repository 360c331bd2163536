"""Commands the docs give people to run do what the docs say."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core.bundle import SignedBundle
from customs_gateway.service.pair import example_dir

from .conftest import CN, US, Pair, sample
from .restore_helpers import backup
from .test_key_lifecycle import _wait

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


def _restore_block() -> list[str]:
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    after = text.split("<!-- restore-procedure", 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return [ln for ln in block.splitlines() if ln.strip()]


@pytest.mark.parametrize("homes", ["sqlite"], indirect=True)
async def test_the_restore_procedure_runs_as_written(pair: Pair, homes: dict[str, Any], tmp_path: Path) -> None:
    """docs/operations.md "Restoring from a backup": each line run as written (the paths of this
    test's home in place of /srv/cgw and the backup file), `systemctl` played by the test."""
    home: Path = homes[US].dir
    backup_file = tmp_path / "gateway-backup.db"
    (home / "admin.token").write_text(pair.apis[US].tokens["admin"] + "\n", encoding="utf-8")
    first = [await _submit(pair, f"DOC-{i}") for i in range(2)]
    backup(pair.lp.configs[US], backup_file)
    later = [await _submit(pair, f"DOC-LATER-{i}") for i in range(3)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    shell: list[str] = []
    outputs: list[str] = []
    cwd: list[str] = []  # the operator's shell keeps its directory between the steps

    async def run_shell() -> None:
        if not shell:
            return
        script = "set -e\n" + "\n".join([*cwd[-1:], *shell])
        cwd.extend(ln for ln in shell if ln.startswith("cd "))
        script = script.replace("/var/backups/cgw/gateway-20261201T020000Z.db", str(backup_file))
        script = script.replace("/srv/cgw", str(home))
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        outputs.append(out.decode())
        shell.clear()

    for line in _restore_block():
        if line.startswith("systemctl stop"):
            await run_shell()
            await pair.lp.stop(US)
        elif line.startswith("systemctl start"):
            await run_shell()
            pair.lp._identities.pop(US, None)
            await pair.lp.start(US)
            await _submit(pair, "DOC-WAITING", wait=False)  # the first delivery attempt runs the check
            await _wait(lambda: (r := pair.gw(US).recovery) is not None and r.needed, timeout=20)
        else:
            shell.append(line)
    await run_shell()
    assert "lost: 3" in outputs[-1] or "lost 3" in outputs[-1] or outputs[-1].count("lost ") == 3, outputs[-1]
    for mid in later:
        assert mid in outputs[-1]  # each message lost with the restore is named
    assert not pair.gw(US).recovery.needed
    done = await _submit(pair, "DOC-AFTER")
    _, inbox, _ = await pair.apis[CN].call("GET", "/v1/inbox?limit=500")
    got = [x["id"] for x in inbox["messages"] if x["from"] == US]
    assert got[: len(first) + len(later)] == first + later and got.count(done) == 1


async def _submit(pair: Pair, ref: str, *, wait: bool = True) -> str:
    body = sample("seizure-share")
    body["case_reference"] = ref
    status, r = await pair.apis[US].submit("seizure-share", body=body)
    assert status == 202, r
    if wait:
        m = await pair.apis[US].wait_status(r["id"], {"delivered", "refused", "expired"}, timeout=30)
        assert m["status"] == "delivered", m
    return str(r["id"])
