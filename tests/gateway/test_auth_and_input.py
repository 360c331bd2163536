"""G8/G9 on the local API: role matrix over every endpoint, and bad input is always a 4xx problem.

Every test here but the last only reads or sends input that must be refused, so they share one
running pair per store (`module_pair`); a refusal that wrote anything would show in the others.
"""

from __future__ import annotations

import pytest

from customs_gateway.http.local import ROUTES

from .conftest import MODULE_LOOP, US, Pair

ROLES = ("agency", "admin", "auditor")
PROTECTED = [(m, p, roles) for m, p, _, roles in ROUTES if roles]


def _path(p: str) -> str:
    return (
        p.replace("{id}", "0190a1b2-0000-7000-8000-000000000000")
        .replace("{kid}", "00" * 16)
        .replace("{token_id}", "0" * 16)
        .replace("{request_id}", "0190a1b2-0000-7000-8000-000000000001")
        .replace("{file_id}", "0190a1b2-0000-7000-8000-000000000000")
    )


@MODULE_LOOP
@pytest.mark.parametrize("method,path,roles", PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
async def test_role_matrix(module_pair: Pair, method: str, path: str, roles: tuple[str, ...]) -> None:
    api = module_pair.apis[US]
    body = {} if method == "POST" else None
    status, prob, headers = await api.call(method, _path(path), role=None, json_body=body)
    assert status == 401, (path, prob)
    assert headers["Content-Type"].startswith("application/problem+json")
    if method == "HEAD":  # the same answers without a body
        prob = {"code": "auth.required"}
    assert prob["code"] == "auth.required"
    status, prob, _ = await api.call(
        method,
        _path(path),
        role=None,
        json_body=body,
        headers={"Authorization": "Bearer cgw_0000000000000000.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
    )
    assert status == 401 and (method == "HEAD" or prob["code"] == "auth.invalid")
    for role in ROLES:
        status, prob, _ = await api.call(method, _path(path), role=role, json_body=body)
        if role in roles:
            assert status not in (401, 403), (path, role, prob)
            assert status < 500, (path, role, prob)
        else:
            assert status == 403, (path, role, status, prob)
            assert method == "HEAD" or prob["code"] == "auth.forbidden"


@MODULE_LOOP
async def test_open_endpoints_need_no_token(module_pair: Pair) -> None:
    api = module_pair.apis[US]
    for path in ("/healthz", "/readyz"):
        status, body, _ = await api.call("GET", path, role=None)
        assert status == 200, body


@MODULE_LOOP
@pytest.mark.parametrize(
    "payload,code,field",
    [
        (b"{not json", "schema.json", "$"),
        (b"[]", "schema.json", "$"),
        (b'{"to":"CN-GACC","body":{}}', "schema.required", "$.type"),
        (b'{"type":"parcel","to":"CN-GACC","body":{}}', "schema.type_unknown", "$.type"),
        (b'{"type":"seizure-share","to":"XX-NOPE","body":{}}', "schema.recipient", "$.to"),
        (b'{"type":"seizure-share","to":"CN-GACC","body":[]}', "schema.type", "$.body"),
        (b'{"type":"seizure-share","to":"CN-GACC","body":{},"extra":1}', "schema.unknown_field", "$.extra"),
    ],
)
async def test_bad_submissions_are_problems_naming_the_field(
    module_pair: Pair, payload: bytes, code: str, field: str
) -> None:
    api = module_pair.apis[US]
    status, prob, headers = await api.call(
        "POST", "/v1/messages", data=payload, headers={"Content-Type": "application/json"}
    )
    assert 400 <= status < 500, prob
    assert headers["Content-Type"].startswith("application/problem+json")
    assert prob["code"] == code
    assert prob["field"] == field
    _, listing, _ = await api.call("GET", "/v1/messages")
    assert listing["messages"] == []  # nothing half-written


@MODULE_LOOP
async def test_schema_violation_in_body_names_the_nested_field(module_pair: Pair) -> None:
    from .conftest import sample

    body = sample("seizure-share")
    body["container_numbers"] = ["CSQU3054384"]
    status, prob = await module_pair.apis[US].submit("seizure-share", body=body)
    assert status == 422
    assert prob["code"] == "schema.container_check_digit"
    assert prob["field"].startswith("$.body.container_numbers")


@MODULE_LOOP
async def test_wrong_content_type_is_415(module_pair: Pair) -> None:
    status, prob, _ = await module_pair.apis[US].call(
        "POST", "/v1/messages", data=b"type=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 415 and prob["code"] == "http.unsupported_media_type"


@MODULE_LOOP
async def test_oversized_body_is_413(module_pair: Pair) -> None:
    big = b'{"type":"seizure-share","to":"CN-GACC","body":{"notes":"' + b"x" * (9 * 1024 * 1024) + b'"}}'
    status, _, headers = await module_pair.apis[US].call(
        "POST", "/v1/messages", data=big, headers={"Content-Type": "application/json"}
    )
    assert status == 413
    assert headers["Content-Type"].startswith("application/problem+json")


@MODULE_LOOP
async def test_unknown_path_and_method_are_problems(module_pair: Pair) -> None:
    api = module_pair.apis[US]
    status, _, h = await api.call("GET", "/v1/nothing-here")
    assert status == 404 and h["Content-Type"].startswith("application/problem+json")
    status, prob, h = await api.call("DELETE", "/v1/messages")
    assert status == 405 and prob["code"] == "http.method_not_allowed"


async def test_admin_issues_a_token_shown_once_and_it_works(pair: Pair) -> None:
    api = pair.apis[US]
    status, res, _ = await api.call(
        "POST", "/v1/admin/tokens", role="admin", json_body={"role": "auditor", "label": "GAO"}
    )
    assert status == 201
    tok = res["token"]
    status, _, _ = await api.call("GET", "/v1/schemas", role=None, headers={"Authorization": f"Bearer {tok}"})
    assert status == 200
    status, prob, _ = await api.call("POST", "/v1/admin/tokens", role="admin", json_body={"role": "root"})
    assert status == 422 and prob["field"] == "$.role"
