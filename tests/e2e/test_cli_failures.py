"""Expected failures of the command line are one clear line and a distinct exit code, never a
traceback: no terminal for a passphrase prompt, a port already taken, `--version`."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from customs_gateway import __version__
from customs_gateway.service.pair import EXAMPLE_PASSPHRASE, prepare_pair

CLI = [sys.executable, "-m", "customs_gateway.cli.main"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMS_GATEWAY_")}
    return subprocess.run(
        [*CLI, *args],
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_clean_line(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("customs-gateway:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_version() -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"customs-gateway {__version__}"


def test_init_without_a_terminal_says_how_to_give_the_passphrase(tmp_path: Path) -> None:
    p = run("init", "--identity", "US-CBP", "--dir", str(tmp_path / "gw"), "--host", "gw.example")
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_clean_line(p)
    assert "no terminal" in line and "CUSTOMS_GATEWAY_PASSPHRASE" in line and "--passphrase-file" in line


def test_serve_on_a_port_already_taken_is_one_line_and_exit_4(tmp_path: Path) -> None:
    home = prepare_pair(tmp_path)["US-CBP"]
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", home.local_port))
        taken.listen()
        p = run(
            "serve", "--config", str(home.config_path), env={"CUSTOMS_GATEWAY_PASSPHRASE": EXAMPLE_PASSPHRASE.decode()}
        )
    assert p.returncode == 4, (p.stdout[-2000:], p.stderr[-2000:])
    line = one_clean_line(p)
    assert "cannot listen" in line and "in use" in line


def test_private_key_files_readable_by_others_are_refused_outside_the_examples(tmp_path: Path) -> None:
    env = {"CUSTOMS_GATEWAY_PASSPHRASE": "a passphrase for this test only"}
    home = tmp_path / "gw"
    p = run("init", "--identity", "XX-TEST", "--dir", str(home), "--host", "gw.example", "--kdf-fast", env=env)
    assert p.returncode == 0, p.stderr
    key = next((home / "keys").glob("*.key"))
    key.chmod(0o644)
    p = run("serve", "--config", str(home / "gateway.toml"), env=env)
    assert p.returncode == 2, (p.stdout[-2000:], p.stderr[-2000:])
    line = one_clean_line(p)
    assert "readable by group or others" in line and key.name in line and "chmod 600" in line


def test_serve_logs_why_it_stops(tmp_path: Path) -> None:
    import signal
    import time

    home = prepare_pair(tmp_path)["US-CBP"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMS_GATEWAY_")}
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(home.config_path)],
        env={**clean, "CUSTOMS_GATEWAY_PASSPHRASE": EXAMPLE_PASSPHRASE.decode()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = ""
        while "gateway.started" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "gateway.started" in seen, seen
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    stopping = [ln for ln in out.splitlines() if "gateway.stopping" in ln]
    stopped = [ln for ln in out.splitlines() if "gateway.stopped" in ln]
    assert len(stopping) == len(stopped) == 1 and "SIGTERM" in stopping[0] and "SIGTERM" in stopped[0]


def test_keys_passphrase_is_refused_while_the_gateway_runs(tmp_path: Path) -> None:
    import signal
    import time

    home = prepare_pair(tmp_path)["US-CBP"]
    secret = {"CUSTOMS_GATEWAY_PASSPHRASE": EXAMPLE_PASSPHRASE.decode()}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOMS_GATEWAY_")}
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(home.config_path)],
        env={**clean, **secret},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    new = tmp_path / "new-passphrase"
    new.write_text("a new passphrase", encoding="utf-8")
    try:
        assert proc.stdout is not None
        deadline, seen = time.monotonic() + 60, ""
        while "gateway.started" not in seen and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
        assert "gateway.started" in seen, seen
        p = run("keys", "passphrase", "--config", str(home.config_path), "--new-passphrase-file", str(new), env=secret)
        assert p.returncode == 3, (p.stdout, p.stderr)
        line = one_clean_line(p)
        assert "keys.in_use" in line and str(proc.pid) in line
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    # Stopped: the passphrase may change now.
    p = run("keys", "passphrase", "--config", str(home.config_path), "--new-passphrase-file", str(new), env=secret)
    assert p.returncode == 0, (p.stdout, p.stderr)


def test_init_export_and_import_speak_json(tmp_path: Path) -> None:
    import json

    env = {"CUSTOMS_GATEWAY_PASSPHRASE": "a passphrase for this test only"}
    homes = {}
    for name in ("XX-ONE", "XX-TWO"):
        p = run(
            "init",
            "--identity",
            name,
            "--dir",
            str(tmp_path / name),
            "--host",
            "gw.example",
            "--kdf-fast",
            "--json",
            env=env,
        )
        assert p.returncode == 0, p.stderr
        homes[name] = json.loads(p.stdout)
        assert homes[name]["identity"] == name and len(homes[name]["fingerprint"].split()) == 16
    one_cfg, two_cfg = homes["XX-ONE"]["config"], homes["XX-TWO"]["config"]
    out = tmp_path / "one.bundle.json"
    p = run("keys", "export", "--config", one_cfg, "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    exported = json.loads(p.stdout)
    assert exported["fingerprint"] == homes["XX-ONE"]["fingerprint"] and exported["file"] == str(out)
    p = run("keys", "import-peer", str(out), "--config", two_cfg, "--yes", "--json")
    assert p.returncode == 0, p.stderr
    imported = json.loads(p.stdout)
    assert imported["fingerprint"] == exported["fingerprint"] and imported["config_needs"]["peer.identity"] == "XX-ONE"
    # --json never asks: without --yes it is one clear line.
    p = run("keys", "import-peer", str(out), "--config", two_cfg, "--json")
    assert p.returncode == 2 and "--yes" in one_clean_line(p)


def _all_parsers(
    parser: argparse.ArgumentParser, name: str = "customs-gateway"
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, child in action.choices.items():
                out += _all_parsers(child, f"{name} {verb}")
    return out


def test_every_option_shows_the_same_placeholder_everywhere() -> None:
    from customs_gateway.cli.main import build_parser

    seen: dict[str, set[str]] = {}
    for name, parser in _all_parsers(build_parser()):
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            option = max(action.option_strings, key=len)
            metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
            seen.setdefault(option, set()).add(metavar)
            assert metavar not in ("CONFIG", "TOKEN_FILE", "PASSPHRASE_FILE"), (name, option)
    inconsistent = {o: m for o, m in seen.items() if len(m) > 1}
    assert not inconsistent, inconsistent
    assert seen["--config"] == {"PATH"} and seen["--token-file"] == {"PATH"}


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--seconds", "-1"),
        ("--seconds", "nan"),
        ("--clients", "0"),
        ("--rate", "inf"),
        ("--queued", "-3"),
        ("--audit-entries", "0"),
        ("--file-mib", "0"),
    ],
)
def test_bench_refuses_a_number_out_of_range_before_it_starts(flag: str, value: str) -> None:
    """A negative window or NaN rate used to start the gateways and run (or hang) on it."""
    p = run("bench", flag, value)
    assert p.returncode == 2
    line = one_clean_line(p)
    assert f"({flag})" in line and f"{flag} must be from" in line, line


def test_a_client_verb_with_no_gateway_listening_says_where_it_looked() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    p = run("status", "0193b2c1-0000-7000-8000-000000000000", "--url", url, env={"CUSTOMS_GATEWAY_TOKEN": "cgw_a.b"})
    assert p.returncode == 4
    line = one_clean_line(p)
    assert f"cannot reach the gateway's local API at {url}: Connection refused" in line, line


def test_json_nested_thousands_deep_is_refused_in_one_line(tmp_path: Path) -> None:
    """The standard library's parser raises RecursionError (not ValueError) on deep nesting; an
    export, a trust file or a `--body` nested 5,000 deep used to end in a traceback."""
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    trust = tmp_path / "trust.json"
    trust.write_text('{"US-CBP": ' + "[" * 5000 + "]" * 5000 + "}", encoding="utf-8")
    p = run("audit", "verify", str(deep))
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr, p.stderr
    assert "NOT VERIFIED" in p.stdout + p.stderr and "[audit.malformed]" in p.stdout + p.stderr
    p = run("audit", "verify", "--trust", str(trust), str(deep))
    assert p.returncode != 0 and "Traceback" not in p.stdout + p.stderr, p.stderr
    assert "nested too deeply" in p.stdout + p.stderr
    env = {"CUSTOMS_GATEWAY_TOKEN": "cgw_a.b"}
    send = ("send", "--to", "CN-GACC", "--type", "seizure-share", "--url", "http://127.0.0.1:9", "--body", str(deep))
    p = run(*send, env=env)
    assert p.returncode == 2 and one_clean_line(p) == "customs-gateway: --body is not JSON: it is nested too deeply"
    deep.write_bytes(b"\xff\xfe{}")
    p = run(*send, env=env)
    assert p.returncode == 2 and one_clean_line(p) == "customs-gateway: --body is not UTF-8 text"
