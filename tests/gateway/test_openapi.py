"""The OpenAPI document: valid 3.1, complete both ways against the routes, served and exported alike,
and the JSON real handlers answer conforms to the schemas it documents."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from customs_gateway.core.envelope import BUSINESS_TYPES
from customs_gateway.http import openapi, views
from customs_gateway.http.local import ROUTES, openapi_document
from customs_gateway.http.openapi import OPERATIONS, PEER_PATHS
from customs_gateway.http.peer import peer_app

from .conftest import CN, US, Pair, sample
from .ops_routes import OPS_ROUTES, ops_app

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "docs" / "api" / "openapi.json"


def _export_script() -> Any:
    spec = importlib.util.spec_from_file_location("export_openapi", ROOT / "scripts" / "export_openapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi_document()


def test_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


def test_every_reference_resolves(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target: Any = doc
                for part in ref.removeprefix("#/").split("/"):
                    assert part in target, f"unresolved {ref}"
                    target = target[part]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)


def test_every_route_is_documented_and_every_documented_path_is_routed(doc: dict[str, Any]) -> None:
    routed = {(m.lower(), p) for m, p, _, _ in ROUTES}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if not p.startswith("/peer/")}
    assert routed == documented


def test_every_route_is_described_beyond_its_defaults() -> None:
    routed = {(m, p) for m, p, _, _ in ROUTES}
    assert routed <= set(OPERATIONS), f"describe in http/openapi.py OPERATIONS: {sorted(routed - set(OPERATIONS))}"
    # OPERATIONS may run ahead of ROUTES only by the operations routes about to be wired.
    assert set(OPERATIONS) - routed <= {(m, p) for m, p, _, _ in OPS_ROUTES}


async def test_peer_paths_match_the_peer_app(pair: Pair, doc: dict[str, Any]) -> None:
    app = peer_app(pair.gw(US), None)
    routed = {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.resource is not None}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if p.startswith("/peer/")}
    # aiohttp adds a HEAD beside each GET; a HEAD of its own (peer files) is documented.
    assert routed - {("head", p) for m, p in routed if m == "get"} == documented
    assert set(PEER_PATHS) == {p for _, p in documented}


def test_roles_and_security_follow_the_route_table(doc: dict[str, Any]) -> None:
    for method, path, _, roles in ROUTES:
        op = doc["paths"][path][method.lower()]
        if roles:
            assert op["security"] == [{"bearerAuth": []}]
            assert op["x-roles"] == list(roles)
            assert {"401", "403"} <= set(op["responses"])
        else:
            assert op["security"] == []
    for ops in PEER_PATHS.values():
        for op in ops.values():
            assert op["security"] == [{"peerMutualTLS": []}]


def test_exported_file_is_current(doc: dict[str, Any]) -> None:
    script = _export_script()
    assert EXPORTED.read_text(encoding="utf-8") == script.render(doc), "run scripts/export_openapi.py"
    assert script.main(["--check"]) == 0


async def test_served_document_equals_the_generated_and_the_exported(pair: Pair, doc: dict[str, Any]) -> None:
    async with TestClient(TestServer(ops_app(pair.gw(US)))) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        served = await resp.json()
    assert served == doc
    assert served == json.loads(EXPORTED.read_text(encoding="utf-8"))


def test_answer_schemas_are_generated_from_the_view_structs(doc: dict[str, Any]) -> None:
    _, generated = msgspec.json.schema_components(
        views.REQUEST_TYPES + views.RESPONSE_TYPES, ref_template="#/components/schemas/{name}"
    )
    for name, schema in generated.items():
        got = copy.deepcopy(doc["components"]["schemas"][name])
        if name == "InboxMessage":  # openapi.py adds the one thing no type says: which schemas a body may be
            body = got["properties"]["body"]
            assert body["anyOf"][-1] == {"type": "null"}  # null once disposed of
            assert len(body.pop("anyOf")) == len(BUSINESS_TYPES) + 1
            body["anyOf"] = schema["properties"]["body"]["anyOf"]
        if name == "AuditRow":  # and that an audit row's entry is the log's own format
            assert got["properties"]["entry"].pop("$ref") == "#/components/schemas/AuditEntry"
        if name in ("ConsentAsk", "ConsentAnswer"):  # and that terms given are a partial HandlingTerms
            assert got["properties"]["handling"]["anyOf"][0] == {"$ref": "#/components/schemas/HandlingTermsRequest"}
            got["properties"]["handling"] = schema["properties"]["handling"]
        assert got == schema, name


def test_openapi_py_writes_no_answer_schema_by_hand() -> None:
    _, generated = msgspec.json.schema_components(views.REQUEST_TYPES + views.RESPONSE_TYPES)
    source = Path(openapi.__file__).read_text(encoding="utf-8")
    for name in generated:
        assert f'"{name}": ' not in source, f"{name} is described by hand in openapi.py"


def test_component_names_are_unique_ignoring_case_and_dashes(doc: dict[str, Any]) -> None:
    names = [re.sub("[^a-z0-9]", "", n.lower()) for n in doc["components"]["schemas"]]
    assert len(names) == len(set(names))


# --- the handlers answer what the document says -------------------------------------------


class Conformance:
    """Validates real responses against the documented response schema of (method, path, status)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.templates = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in doc["paths"]]
        self.checked: set[tuple[str, str]] = set()

    def check(self, method: str, url: str, status: int, body: Any, content_type: str = "application/json") -> None:
        path = url.split("?", maxsplit=1)[0]
        template = next(t for rx, t in self.templates if rx.match(path))
        responses = self.doc["paths"][template][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {template} answered undocumented {status}"
        resp = responses[str(status)]
        if "$ref" in resp:
            resp = self.doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
        media = resp["content"][content_type.split(";", maxsplit=1)[0]]
        schema = {**media["schema"], "components": self.doc["components"]}
        errors = sorted(Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5]
        )
        self.checked.add((method, template))


async def test_handlers_answer_what_the_document_says(pair: Pair, doc: dict[str, Any]) -> None:
    c = Conformance(doc)
    us, cn = pair.apis[US], pair.apis[CN]

    async def call(api: Any, method: str, url: str, role: str | None = "agency", **kw: Any) -> Any:
        status, body, headers = await api.call(method, url, role=role, **kw)
        c.check(method, url, status, body, headers.get("Content-Type", "application/json"))
        return body

    sub = await call(
        us, "POST", "/v1/messages", json_body={"type": "seizure-share", "to": CN, "body": sample("seizure-share")}
    )
    await us.wait_status(sub["id"], {"delivered"})
    await call(us, "GET", f"/v1/messages/{sub['id']}")
    await call(us, "GET", "/v1/messages?limit=10")
    page = await call(cn, "GET", "/v1/inbox?wait=5")
    assert page["messages"], page
    await call(cn, "GET", "/v1/messages?direction=inbound")
    await call(cn, "POST", f"/v1/inbox/{sub['id']}/ack", json_body={"status": "processed"})
    await us.wait_status(sub["id"], {"acknowledged"})
    await call(us, "GET", f"/v1/messages/{sub['id']}")  # now with the ack
    await call(us, "GET", "/v1/schemas", role="auditor")
    await call(us, "GET", "/v1/admin/keys", role="admin")
    await call(us, "GET", "/v1/admin/peers", role="admin")
    await call(us, "POST", "/v1/admin/tokens", role="admin", json_body={"role": "auditor", "label": "openapi test"})
    entries = await call(us, "GET", "/v1/audit/entries?limit=5", role="auditor")
    size = len(entries["entries"])
    await call(us, "GET", f"/v1/audit/proof/inclusion?size={size}&index=0", role="auditor")
    await call(us, "GET", f"/v1/audit/proof/consistency?old=1&new={size}", role="auditor")
    await call(us, "POST", "/v1/admin/keys/rotate", role="admin", json_body={"kind": "encryption"})
    await call(
        us, "POST", "/v1/admin/keys/0123456789abcdef0123456789abcdef/revoke", role="admin", json_body={"reason": "x"}
    )
    await call(us, "GET", "/healthz", role=None)
    await call(us, "GET", "/readyz", role=None)
    # problems: a schema violation, a missing token, a wrong role, an unknown message
    await call(us, "POST", "/v1/messages", json_body={"type": "seizure-share", "to": CN, "body": {}})
    await call(us, "GET", "/v1/messages", role=None)
    await call(us, "GET", "/v1/admin/keys")
    await call(us, "GET", "/v1/messages/0190a1b2-0000-7000-8000-000000000000")
    assert len(c.checked) >= 16


def test_every_operation_documents_the_parsers_400(doc: dict[str, Any]) -> None:
    """aiohttp's HTTP parser refuses a request line or header over its limits before any route
    (400 `http.malformed`, tests/gateway/test_fuzz.py): every operation, local or peer, may answer
    it, so every one documents it. Found by schemathesis with a query string of ~9 KB."""
    missing = [
        f"{method.upper()} {path}"
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "400" not in op["responses"]
    ]
    assert missing == []
