"""Every validation problem at once (issue 16): `errors` lists them all (bounded), an enum names
its allowed values, the same mistake has the same code on every endpoint, and `title` is words."""

from __future__ import annotations

import gzip
import json
from typing import Any

import aiohttp

from customs_gateway.service import tls

from .conftest import CN, MODULE_LOOP, US, Pair, sample

pytestmark = MODULE_LOOP


def _fields(problem: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["code"] for e in problem["errors"]}


async def test_submit_reports_every_problem_of_the_body(module_pair: Pair) -> None:
    body = sample("seizure-share")
    del body["seizure_date"]
    body["direction"] = "sideways"
    body["extra_thing"] = 1
    status, p, headers = await module_pair.apis[US].call(
        "POST", "/v1/messages", json_body={"type": "seizure-share", "to": CN, "body": body}
    )
    assert status == 422 and headers["Content-Type"].startswith("application/problem+json")
    got = _fields(p)
    assert got["$.body.seizure_date"] == "schema.required"
    assert got["$.body.direction"] == "schema.enum"
    assert got["$.body.extra_thing"] == "schema.unknown_field"
    assert (p["field"], p["code"]) == (p["errors"][0]["field"], p["errors"][0]["code"])
    enum = next(e for e in p["errors"] if e["field"] == "$.body.direction")
    assert "import" in enum["detail"] and "export" in enum["detail"]  # the allowed values
    assert "sideways" not in str(p)  # body values never come back
    assert p["title"] != p["code"] and " " in p["title"]


async def test_nested_problems_are_all_listed(module_pair: Pair) -> None:
    body = sample("seizure-share")
    body["commodities"] = [dict(body["commodities"][0]) for _ in range(3)]
    body["commodities"][0]["hs_code"] = "not-a-code"
    del body["commodities"][2]["description"]
    status, p, _ = await module_pair.apis[US].call(
        "POST", "/v1/messages", json_body={"type": "seizure-share", "to": CN, "body": body}
    )
    assert status == 422
    got = _fields(p)
    assert "$.body.commodities[0].hs_code" in got and got["$.body.commodities[2].description"] == "schema.required"


async def test_the_same_mistake_has_the_same_code_on_every_endpoint(module_pair: Pair) -> None:
    api = module_pair.apis[US]
    _, sent = await api.submit("seizure-share")
    await api.wait_status(sent["id"], {"delivered"})
    cn = module_pair.apis[CN]
    status, p, _ = await cn.call("POST", f"/v1/inbox/{sent['id']}/ack", json_body={"status": "sideways"})
    assert status == 422 and p["code"] == "schema.enum" and p["field"] == "$.status"
    assert "processed" in p["detail"] and "rejected" in p["detail"]
    status, p, _ = await cn.call("POST", f"/v1/inbox/{sent['id']}/ack", json_body={"reason": "x"})
    assert status == 422 and p["code"] == "schema.required" and p["field"] == "$.status"
    status, p, _ = await cn.call("POST", f"/v1/inbox/{sent['id']}/ack", json_body={"status": "processed", "bogus": 1})
    assert status == 422 and p["code"] == "schema.unknown_field" and p["field"] == "$.bogus"


async def test_every_problem_has_errors_and_a_title(module_pair: Pair) -> None:
    status, p, _ = await module_pair.apis[US].call("GET", "/v1/messages/nope", role="agency")
    assert status in (404, 422)
    assert p["errors"] == [{"field": p.get("field"), "code": p["code"], "detail": p["detail"]}]
    status, p, _ = await module_pair.apis[US].call("GET", "/v1/admin/keys", role="agency")
    assert status == 403 and p["title"] == "Not authorized"


async def test_a_key_twice_is_refused_on_every_endpoint_that_takes_a_body(module_pair: Pair) -> None:
    """I-JSON (RFC 7493 §2.3): a repeated key would be read one way here and another elsewhere
    (msgspec keeps the last, other parsers the first); every request body is refused for it."""
    us, cn = module_pair.apis[US], module_pair.apis[CN]
    body = sample("seizure-share")
    inner = json.dumps(body)[:-1] + ', "case_reference": "CBP-OTHER-0001"}'
    raw = f'{{"type": "seizure-share", "to": "{CN}", "body": {inner}}}'.encode()
    headers = {"Content-Type": "application/json"}
    status, prob, _ = await us.call("POST", "/v1/messages", data=raw, headers=headers)
    assert status == 422 and prob["code"] == "schema.duplicate_key", prob
    assert prob["field"] == "$.body.case_reference"
    status, prob, _ = await us.call(
        "POST", "/v1/messages", data=raw.replace(b'"to"', b'"to": "x", "to"', 1), headers=headers
    )
    assert status == 422 and prob["code"] == "schema.duplicate_key" and prob["field"] == "$.to", prob
    # The lost key's colon made up by a colon written \u003a: a count of colons alone would pass it.
    clean = json.dumps({"type": "seizure-share", "to": CN, "body": body}).encode()
    spelled = clean.replace(b'"to"', b'"to": "x", "to"', 1).replace(b"testing: fire", b"testing\\u003a fire", 1)
    assert spelled.count(b":") == clean.count(b":") and b"\\u003a" in spelled
    status, prob, _ = await us.call("POST", "/v1/messages", data=spelled, headers=headers)
    assert status == 422 and prob["code"] == "schema.duplicate_key" and prob["field"] == "$.to", prob
    twice = {
        ("/v1/admin/tokens", "admin"): b'{"role": "agency", "role": "admin"}',
        ("/v1/admin/keys/rotate", "admin"): b'{"kind": "signing", "kind": "encryption"}',
        ("/v1/admin/keys/renew", "admin"): b'{"kind": "tls", "kind": "witness"}',
        ("/v1/admin/recover", "admin"): b'{"reason": "a", "reason": "b"}',
    }
    for (path, role), data in twice.items():
        status, prob, _ = await us.call("POST", path, role=role, data=data, headers=headers)
        assert status == 422 and prob["code"] == "schema.duplicate_key", (path, prob)
    _, sent = await us.submit("seizure-share")
    await us.wait_status(sent["id"], {"delivered"})
    data = b'{"status": "processed", "status": "rejected"}'
    status, prob, _ = await cn.call("POST", f"/v1/inbox/{sent['id']}/ack", data=data, headers=headers)
    assert status == 422 and prob["code"] == "schema.duplicate_key" and prob["field"] == "$.status", prob


async def test_a_body_that_does_not_decode_as_its_content_encoding_is_a_400(module_pair: Pair) -> None:
    """aiohttp decodes `Content-Encoding: gzip` bodies as the handler reads them; bytes that are
    not gzip used to escape as a 500. Now a 400 problem on both APIs; real gzip still works."""
    raw = json.dumps({"type": "seizure-share", "to": CN, "body": sample("seizure-share")}).encode()
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    status, p, h = await module_pair.apis[US].call("POST", "/v1/messages", data=raw, headers=headers)
    assert (status, p["code"]) == (400, "http.malformed"), p
    assert h["Content-Type"].startswith("application/problem+json") and "Content-Encoding" in p["detail"]
    status, p, _ = await module_pair.apis[US].call("POST", "/v1/messages", data=gzip.compress(raw), headers=headers)
    assert status == 202, p
    us = module_pair.gw(US)
    ctx = tls.client_context(us.identity.tls_cert_pem, us.identity.tls_key_pem, us.peer.bundle.tls_certificate.encode())
    url = f"https://127.0.0.1:{module_pair.lp.homes[CN].peer_port}/peer/v1/envelopes"
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s,
        s.post(url, data=b'{"envelopes": []}', headers=headers) as r,
    ):
        assert r.status == 400 and (await r.json(content_type=None))["code"] == "http.malformed"
