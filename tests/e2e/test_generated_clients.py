"""A client generated from our OpenAPI document works against two real gateways (issue 15).

`openapi-python-client` generates a typed package from docs/api/openapi.json (the file the
gateway also serves); the test imports it and does what a back-end does: submit a seizure share,
follow it to `delivered`, read it from the peer's inbox as a typed model, acknowledge it, get a
typed problem for a bad request, then submit every business type through its own request model
and read each back as its type's model. The TypeScript client does the same. A schema the
generator cannot read would leave a model out and fail here (as `InboxPage` and the `Submit-*`
models once did).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from customs_gateway.core.envelope import BUSINESS_TYPES
from tests.gateway.conftest import CN, US, Pair, _homes_on, running_pair, sample

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api" / "openapi.json"


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    out = tmp_path_factory.mktemp("generated")
    tool = Path(sys.executable).parent / "openapi-python-client"
    proc = subprocess.run(
        [str(tool), "generate", "--path", str(DOC), "--meta", "none", "--output-path", str(out / "cgw_client")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Every warning but the two NDJSON downloads (exports, evidence files) is a schema a client loses.
    warnings = [w for w in proc.stdout.split("WARNING")[1:] if "application/x-ndjson" not in w]
    assert "Unable to" not in proc.stdout and not warnings, proc.stdout
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("cgw_client")
    finally:
        sys.path.remove(str(out))


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    with _homes_on("sqlite", tmp_path) as homes:
        async with running_pair(homes) as p:
            yield p


def _camel(msg_type: str) -> str:
    return "".join(part.capitalize() for part in msg_type.split("-"))


async def every_type_bodies(pair: Pair) -> dict[str, dict[str, Any]]:
    """A valid body of every business type US may send CN now: what a body names (an invitation,
    the message a consent request asks about, the request a decision decides) CN sends US first."""
    us, cn = pair.apis[US], pair.apis[CN]
    _, inv = await cn.submit("port-visit-invitation")
    await cn.wait_status(inv["id"], {"delivered"})
    _, share = await us.submit("seizure-share")
    await us.wait_status(share["id"], {"delivered"})
    _, req = await cn.submit("consent-request", body={**sample("consent-request"), "message_id": share["id"]})
    await cn.wait_status(req["id"], {"delivered"})
    names = {
        "port-visit-reply": {"invitation_id": inv["id"]},
        "consent-request": {"message_id": inv["id"]},
        "consent-decision": {"request_id": req["id"]},
    }
    return {t: await us.with_files(t, {**sample(t), **names.get(t, {})}) for t in BUSINESS_TYPES}


def _mod(pkg: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{pkg.__name__}.{name}")


async def test_generated_python_client_submits_reads_and_acknowledges(client_package: ModuleType, pair: Pair) -> None:
    pkg = client_package
    models = _mod(pkg, "models")
    submit = _mod(pkg, "api.messages.submit")
    get_message = _mod(pkg, "api.messages.get_message")
    inbox = _mod(pkg, "api.inbox.inbox")
    ack = _mod(pkg, "api.inbox.ack")
    us = pkg.AuthenticatedClient(base_url=pair.apis[US].url, token=pair.apis[US].tokens["agency"])
    cn = pkg.AuthenticatedClient(base_url=pair.apis[CN].url, token=pair.apis[CN].tokens["agency"])

    body = sample("seizure-share")
    body["case_reference"] = "GEN-CLIENT-1"
    request = models.SubmitSeizureShare.from_dict({"type": "seizure-share", "to": CN, "body": body})
    res = await submit.asyncio_detailed(client=us, body=request, idempotency_key="gen-client-1")
    assert res.status_code == 202 and isinstance(res.parsed, models.SubmitResponse), res.content
    mid = res.parsed.id

    for _ in range(200):
        m = await get_message.asyncio(client=us, id=mid)
        assert isinstance(m, models.Message), m
        if m.status.value == "delivered":
            break
        await asyncio.sleep(0.05)
    assert m.status.value == "delivered" and m.receipt is not None

    page = await inbox.asyncio(client=cn, limit=100)
    assert isinstance(page, models.InboxPage), page
    (item,) = [x for x in page.messages if x.id == mid]
    assert isinstance(item.body, models.SeizureShare)  # the body parsed as its type's model
    assert item.body.case_reference == "GEN-CLIENT-1"

    done = await ack.asyncio_detailed(
        client=cn, id=mid, body=models.AckRequest.from_dict({"status": "processed", "reason": "filed"})
    )
    assert done.status_code in (200, 202) and isinstance(done.parsed, models.AckResponse), done.content

    missing = await get_message.asyncio_detailed(client=us, id="01a00000-0000-7000-8000-000000000000")
    assert missing.status_code == 404 and isinstance(missing.parsed, models.Problem)
    assert missing.parsed.code == "message.not_found" or missing.parsed.code.endswith("not_found")

    # Every business type, each through its own generated request model, read back as its model.
    bodies = await every_type_bodies(pair)
    sent = {}
    for t, b in bodies.items():
        model = getattr(models, "Submit" + _camel(t))
        res = await submit.asyncio_detailed(client=us, body=model.from_dict({"type": t, "to": CN, "body": b}))
        assert res.status_code == 202 and isinstance(res.parsed, models.SubmitResponse), (t, res.content)
        sent[t] = res.parsed.id
    for mid in sent.values():
        await pair.apis[US].wait_status(mid, {"delivered"})
    page = await inbox.asyncio(client=cn, limit=500)
    got = {x.id: x for x in page.messages}
    for t, mid in sent.items():
        assert got[mid].type_.value == t  # the generator names the field `type_`
        assert isinstance(got[mid].body, getattr(models, _camel(t))), (t, type(got[mid].body))


TS = ROOT / "tests" / "clients" / "ts"


async def _run(*argv: str, cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"{' '.join(argv)}:\n{out.decode()}"
    return out.decode()


async def test_generated_typescript_client_type_checks_and_runs(pair: Pair, tmp_path: Path) -> None:
    if not (TS / "node_modules" / ".bin" / "tsc").exists():
        if os.environ.get("CI"):
            pytest.fail("tests/clients/ts has no node_modules: `make test` runs `npm ci` there")
        pytest.skip("npm packages of tests/clients/ts are not installed (make test installs them)")
    work = tmp_path / "ts"
    work.mkdir()
    for name in ("check.ts", "tsconfig.json", "package.json"):
        shutil.copy(TS / name, work / name)
    (work / "node_modules").symlink_to(TS / "node_modules")
    bin_ = TS / "node_modules" / ".bin"
    await _run(str(bin_ / "openapi-typescript"), str(DOC), "-o", str(work / "schema.d.ts"), cwd=work)
    await _run(str(bin_ / "tsc"), "-p", ".", cwd=work)  # the program type-checks against the document
    body = sample("seizure-share")
    body["case_reference"] = "TS-CLIENT-1"
    every = await every_type_bodies(pair)
    out = await _run(
        "node",
        str(work / "out" / "check.js"),
        pair.apis[US].url,
        pair.apis[US].tokens["agency"],
        pair.apis[CN].url,
        pair.apis[CN].tokens["agency"],
        json.dumps(body),
        json.dumps(every),
        cwd=work,
    )
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["ok"] and seen["status"] == "delivered" and seen["from"] == US, seen
    assert seen["case_reference"] == "TS-CLIENT-1" and seen["missing"], seen
    assert sorted(seen["types"]) == sorted(BUSINESS_TYPES) and seen["acked"] == "processed", seen
