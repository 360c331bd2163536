"""The path a new operator follows, with real processes: init, exchange bundles, tokens, serve, send.

Two `customs-gateway serve` processes talk over pinned mutual TLS; the back-end side uses plain
HTTP calls and the `send` / `inbox` / `status` verbs, exactly as docs/quickstart.md describes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.service.pair import example_dir, free_port

from .drill import both

PASS = "e2e-test-passphrase"
CLI = [sys.executable, "-m", "customs_gateway.cli.main"]


def run(
    *args: str, env: dict[str, str], check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, input=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}")
    return proc


def http(method: str, url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}")
        try:
            status, _ = http("GET", url + "/readyz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture
def two_gateways(tmp_path: Path) -> Iterator[dict[str, Any]]:
    env = {**os.environ, "CUSTOMS_GATEWAY_PASSPHRASE": PASS}
    env.pop("CUSTOMS_GATEWAY_CONFIG", None)
    names = ("US-CBP", "CN-GACC")
    ports = {n: (free_port(), free_port()) for n in names}
    pairs = ((names[0], names[1]), (names[1], names[0]))
    # Each step runs for both operators at once (they are independent); the steps stay in order.
    both(
        lambda me, other: run(
            "init",
            "--identity", me,
            "--dir", str(tmp_path / me),
            "--local-port", str(ports[me][0]),
            "--peer-port", str(ports[me][1]),
            "--peer-identity", other,
            "--peer-url", f"https://127.0.0.1:{ports[other][1]}",
            "--kdf-fast",
            env=env,
        ),
        pairs,
    )  # fmt: skip
    both(
        lambda me, _: run(
            "keys",
            "export",
            "--config",
            str(tmp_path / me / "gateway.toml"),
            "--out",
            str(tmp_path / f"{me}.bundle.json"),
            env=env,
        ),
        pairs,
    )
    imported = both(
        lambda me, other: run(
            "keys",
            "import-peer",
            str(tmp_path / f"{other}.bundle.json"),
            "--config",
            str(tmp_path / me / "gateway.toml"),
            "--yes",
            env=env,
        ),
        pairs,
    )
    for (_, other), res in zip(pairs, imported, strict=True):
        assert other in res.stdout + res.stderr
    issued = both(
        lambda me, _: run(
            "tokens", "issue", "--role", "agency", "--config", str(tmp_path / me / "gateway.toml"), env=env
        ).stdout.strip(),
        pairs,
    )
    tokens = dict(zip(names, issued, strict=True))
    procs = {}
    log_files = {}
    for me in names:
        log_files[me] = (tmp_path / f"{me}.log").open("wb")
        procs[me] = subprocess.Popen(
            [*CLI, "serve", "--config", str(tmp_path / me / "gateway.toml")],
            env=env,
            stdout=log_files[me],
            stderr=subprocess.STDOUT,
        )
    try:
        for me in names:
            wait_ready(f"http://127.0.0.1:{ports[me][0]}", procs[me])
        yield {"env": env, "ports": ports, "tokens": tokens, "root": tmp_path, "procs": procs}
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in log_files.values():
            f.close()


def test_two_processes_exchange_over_http_and_cli(two_gateways: dict[str, Any]) -> None:
    g = two_gateways
    us_url = f"http://127.0.0.1:{g['ports']['US-CBP'][0]}"
    cn_url = f"http://127.0.0.1:{g['ports']['CN-GACC'][0]}"
    # An invitation, so that CN-GACC's reply below answers one it really received.
    body = json.loads((example_dir() / "messages" / "port-visit-invitation.json").read_text(encoding="utf-8"))
    status, res = http(
        "POST",
        us_url + "/v1/messages",
        g["tokens"]["US-CBP"],
        {"type": "port-visit-invitation", "to": "CN-GACC", "body": body},
    )
    assert status == 202, res
    mid = res["id"]
    end = time.monotonic() + 20
    while True:
        _, m = http("GET", f"{us_url}/v1/messages/{mid}", g["tokens"]["US-CBP"])
        if m["status"] == "delivered" or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert m["status"] == "delivered", m
    _, inbox = http("GET", cn_url + "/v1/inbox", g["tokens"]["CN-GACC"])
    assert [x["id"] for x in inbox["messages"]] == [mid]
    assert inbox["messages"][0]["body"] == body

    # The same through the CLI verbs a person would use.
    env = {**g["env"], "CUSTOMS_GATEWAY_TOKEN": g["tokens"]["CN-GACC"]}
    reply = {"invitation_id": mid, "decision": "decline", "reason": "日程冲突 / schedule conflict"}
    body_file = g["root"] / "reply.json"
    body_file.write_text(json.dumps(reply, ensure_ascii=False), encoding="utf-8")
    sent = run(
        "send",
        "--url",
        cn_url,
        "--type",
        "port-visit-reply",
        "--to",
        "US-CBP",
        "--body",
        str(body_file),
        "--wait",
        "20",
        "--json",
        env=env,
    )
    out = json.loads(sent.stdout)
    assert out["status"] == "delivered", out
    st = run("status", out["id"], "--url", cn_url, env=env)
    assert "delivered" in st.stdout
    env_us = {**g["env"], "CUSTOMS_GATEWAY_TOKEN": g["tokens"]["US-CBP"]}
    got = json.loads(run("inbox", "--url", us_url, "--json", "--ack", "processed", env=env_us).stdout)
    assert [m["id"] for m in got["messages"]] == [out["id"]]
    assert got["messages"][0]["body"]["reason"] == reply["reason"]
    # A bad body through the CLI is a clear refusal with the field, exit code 3.
    body_file.write_text(json.dumps({"invitation_id": "nope", "decision": "maybe"}), encoding="utf-8")
    bad = run(
        "send",
        "--url",
        cn_url,
        "--type",
        "port-visit-reply",
        "--to",
        "US-CBP",
        "--body",
        str(body_file),
        env=env,
        check=False,
    )
    assert bad.returncode == 3
    assert "schema." in bad.stderr and "$.body." in bad.stderr
    # The acknowledgement made by `inbox --ack` reaches the sender.
    end = time.monotonic() + 20
    while True:
        _, m = http("GET", f"{cn_url}/v1/messages/{out['id']}", g["tokens"]["CN-GACC"])
        if m["status"] == "acknowledged" or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert m["status"] == "acknowledged", m

    # An administrator rotates US-CBP's signing key on the running gateway; traffic continues.
    us_cfg = str(g["root"] / "US-CBP" / "gateway.toml")
    admin = run("tokens", "issue", "--role", "admin", "--config", us_cfg, env=g["env"]).stdout.strip()
    env_admin = {**g["env"], "CUSTOMS_GATEWAY_TOKEN": admin}
    rot = json.loads(run("keys", "rotate", "--kind", "signing", "--config", us_cfg, "--json", env=env_admin).stdout)
    new_kid = rot["kids"][0]
    end = time.monotonic() + 20
    while True:
        _, keys = http("GET", us_url + "/v1/admin/keys", admin)
        if any(k["kid"] == new_kid and k["signing_now"] for k in keys["keys"]) or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert any(k["kid"] == new_kid and k["signing_now"] for k in keys["keys"]), keys
    status, res = http(
        "POST",
        us_url + "/v1/messages",
        g["tokens"]["US-CBP"],
        {"type": "port-visit-invitation", "to": "CN-GACC", "body": body},
    )
    assert status == 202, res
    end = time.monotonic() + 20
    while True:
        _, m = http("GET", f"{us_url}/v1/messages/{res['id']}", g["tokens"]["US-CBP"])
        if m["status"] == "delivered" or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert m["status"] == "delivered", m
    listed = json.loads(
        run(
            "keys", "list", "--peer", "--json", "--config", str(g["root"] / "CN-GACC" / "gateway.toml"), env=g["env"]
        ).stdout
    )
    assert new_kid in json.dumps(listed)
