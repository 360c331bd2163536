"""Token revocation: through the admin API (refused at once) and the CLI (refused within the token
cache's lifetime), audited, with clear errors for unknown, repeated and malformed revocations."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import json
import socket
from typing import Any

import pytest

from customs_gateway.cli.main import main
from customs_gateway.core.clock import JumpClock
from customs_gateway.service.gateway import TOKEN_CACHE_SECONDS
from tests.gateway.conftest import US, Pair


async def _issue(pair: Pair, role: str = "agency", label: str = "back-end 7") -> tuple[str, str]:
    api = pair.apis[US]
    status, res, _ = await api.call("POST", "/v1/admin/tokens", role="admin", json_body={"role": role, "label": label})
    assert status == 201, res
    return res["id"], res["token"]


async def _as(pair: Pair, secret: str, method: str, path: str) -> tuple[int, Any]:
    api = pair.apis[US]
    async with api.session.request(method, api.url + path, headers={"Authorization": f"Bearer {secret}"}) as r:
        raw = await r.read()
        return r.status, json.loads(raw) if raw else None


async def _audit_kinds(pair: Pair) -> list[dict[str, Any]]:
    status, res, _ = await pair.apis[US].call("GET", "/v1/audit/entries?start=0&limit=1000", role="auditor")
    assert status == 200
    return [e["entry"] for e in res["entries"]]


async def test_revoked_through_the_api_is_refused_at_once(pair: Pair) -> None:
    api = pair.apis[US]
    tid, secret = await _issue(pair)
    assert (await _as(pair, secret, "GET", "/v1/messages"))[0] == 200  # now cached by the gateway

    status, res, _ = await api.call("POST", f"/v1/admin/tokens/{tid}/revoke", role="admin")
    assert status == 200, res
    assert res["id"] == tid and res["role"] == "agency" and res["label"] == "back-end 7" and res["revoked_at"]
    status, problem = await _as(pair, secret, "GET", "/v1/messages")
    assert status == 401 and problem["code"] == "auth.invalid"

    # Revoked once only; unknown and malformed ids are named.
    status, res, headers = await api.call("POST", f"/v1/admin/tokens/{tid}/revoke", role="admin")
    assert status == 409 and res["code"] == "token.already_revoked" and res["field"] == "id"
    assert headers["Content-Type"].startswith("application/problem+json")
    status, res, _ = await api.call("POST", "/v1/admin/tokens/0123456789abcdef/revoke", role="admin")
    assert status == 404 and res["code"] == "token.not_found"
    status, res, _ = await api.call("POST", "/v1/admin/tokens/NOT-AN-ID/revoke", role="admin")
    assert status == 422 and res["code"] == "schema.pattern" and res["field"] == "id"

    entries = [e for e in await _audit_kinds(pair) if e["kind"] == "token_revoked"]
    assert len(entries) == 1 and entries[0]["detail"] == {"token_id": tid}
    assert entries[0]["actor"].startswith("token:")


async def test_only_an_admin_revokes(pair: Pair) -> None:
    tid, secret = await _issue(pair)
    for role in ("agency", "auditor"):
        status, res, _ = await pair.apis[US].call("POST", f"/v1/admin/tokens/{tid}/revoke", role=role)
        assert status == 403 and res["code"] == "auth.forbidden"
    # A token cannot revoke itself without the admin role either, and is still valid afterwards.
    assert (await _as(pair, secret, "POST", f"/v1/admin/tokens/{tid}/revoke"))[0] == 403
    assert (await _as(pair, secret, "GET", "/v1/messages"))[0] == 200


async def test_revoked_from_the_cli_while_running_is_refused_soon(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    tid, secret = await _issue(pair, label="")
    assert (await _as(pair, secret, "GET", "/v1/messages"))[0] == 200  # cached in the running gateway
    config = str(pair.lp.homes[US].config_path)
    code = await asyncio.to_thread(main, ["tokens", "revoke", tid, "--config", config, "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == tid and out["role"] == "agency" and out["revoked_at"]
    # The CLI wrote to the store from outside: the gateway notices when its cached record expires.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 * TOKEN_CACHE_SECONDS
    while (status := (await _as(pair, secret, "GET", "/v1/messages"))[0]) == 200 and loop.time() < deadline:
        await asyncio.sleep(0.1)
    assert status == 401
    entries = [e for e in await _audit_kinds(pair) if e["kind"] == "token_revoked"]
    assert [e["detail"] for e in entries] == [{"token_id": tid}]
    # The entry names who ran the command: the OS user and the host.
    assert entries[0]["actor"] == f"cli:tokens-revoke:{getpass.getuser()}@{socket.gethostname()}"
    # Again from the CLI: a clear error, exit code 3, nothing written.
    assert await asyncio.to_thread(main, ["tokens", "revoke", tid, "--config", config]) == 3
    assert "token.already_revoked" in capsys.readouterr().err
    assert len([e for e in await _audit_kinds(pair) if e["kind"] == "token_revoked"]) == 1


async def test_tokens_are_listed_without_secrets_through_the_api_and_the_cli(
    pair: Pair, capsys: pytest.CaptureFixture[str]
) -> None:
    tid, secret = await _issue(pair, label="customs back-end 海关")
    status, _, _ = await pair.apis[US].call("POST", f"/v1/admin/tokens/{tid}/revoke", role="admin")
    assert status == 200
    status, res, _ = await pair.apis[US].call("GET", "/v1/admin/tokens", role="admin")
    assert status == 200
    mine = [t for t in res["tokens"] if t["id"] == tid]
    assert mine and mine[0]["label"] == "customs back-end 海关" and mine[0]["revoked_at"] is not None
    assert {"agency", "admin", "auditor"} <= {t["role"] for t in res["tokens"]}
    assert secret not in json.dumps(res) and all(
        set(t) == {"id", "role", "label", "created_at", "revoked_at", "expires_at"} for t in res["tokens"]
    )
    for role in ("agency", "auditor"):
        assert (await pair.apis[US].call("GET", "/v1/admin/tokens", role=role))[0] == 403
    config = str(pair.lp.homes[US].config_path)
    assert await asyncio.to_thread(main, ["tokens", "list", "--config", config, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["tokens"]
    assert [t["id"] for t in listed] == [t["id"] for t in res["tokens"]]


async def test_a_token_with_valid_days_expires(jump_pair: tuple[Pair, JumpClock]) -> None:
    pair, clock = jump_pair
    api = pair.apis[US]
    status, res, _ = await api.call(
        "POST", "/v1/admin/tokens", role="admin", json_body={"role": "agency", "label": "temp", "valid_days": 2}
    )
    assert status == 201 and res["expires_at"], res
    status, never, _ = await api.call(
        "POST", "/v1/admin/tokens", role="admin", json_body={"role": "agency", "label": "lasting"}
    )
    assert never["expires_at"] is None
    for bad in (0, 4000, "2", 1.5):
        status, p, _ = await api.call(
            "POST", "/v1/admin/tokens", role="admin", json_body={"role": "agency", "valid_days": bad}
        )
        assert status == 422 and p["field"] == "$.valid_days", p
    assert (await _as(pair, res["token"], "GET", "/v1/messages"))[0] == 200
    clock.jump(dt.timedelta(days=2, seconds=1))
    await asyncio.sleep(TOKEN_CACHE_SECONDS + 0.1)  # the cached record is read again
    status, p = await _as(pair, res["token"], "GET", "/v1/messages")
    assert status == 401 and p["code"] == "auth.expired"
    assert (await _as(pair, never["token"], "GET", "/v1/messages"))[0] == 200
    _, listed, _ = await api.call("GET", "/v1/admin/tokens", role="admin")
    by_id = {t["id"]: t for t in listed["tokens"]}
    assert by_id[res["id"]]["expires_at"] == res["expires_at"] and by_id[never["id"]]["expires_at"] is None
    entries = await _audit_kinds(pair)
    issued = [e for e in entries if e["kind"] == "token_issued" and e["detail"]["token_id"] == res["id"]]
    assert issued[0]["detail"]["expires_at"] == res["expires_at"]
