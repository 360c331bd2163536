"""The local API against its own OpenAPI document (schemathesis): no 5xx, and answers as documented.

Schemathesis generates valid and invalid requests for every local operation of
`http.openapi.openapi_document()` and sends them, with a token of the role the route admits, to
a running `customs-gateway serve`. Key rotation and revocation are left out (a valid example
would really rotate or revoke the gateway's keys); the peer API needs mutual TLS and is fuzzed
in test_fuzz.py. Bounded: a few examples per operation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from customs_gateway.http.local import ROUTES, openapi_document

from ..e2e.drill import US, ProcessPair

schemathesis = pytest.importorskip("schemathesis")

MAX_EXAMPLES = 15
ROLE_FOR = {(method, path): roles[0] for method, path, _, roles in ROUTES if roles}
LEFT_OUT = r"^/v1/admin/keys(/rotate|/\{kid\}/revoke)?$"
TRIED: Counter[str] = Counter()
#: Checks that do not fit this API: business rules beyond JSON Schema (the configured peer as `to`,
#: ISO 6346 check digits, index < size, old <= new) refuse schema-valid requests by design, and
#: unknown query parameters are ignored by design. Every other check runs, with "no 5xx" first.
NOT_SENSIBLE = [
    schemathesis.checks.positive_data_acceptance,
    schemathesis.checks.negative_data_rejection,
]

schema = (
    schemathesis.openapi.from_dict(openapi_document())
    .exclude(path_regex=r"^/peer/")
    .exclude(method="POST", path_regex=LEFT_OUT)
)


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessPair]:
    pp = ProcessPair.prepare(Path(tmp_path_factory.mktemp("schemathesis")))
    pp.start_all()
    try:
        yield pp
    finally:
        codes = pp.stop_all()
        top = ", ".join(f"{op} {n}" for op, n in TRIED.most_common(6))
        print(f"\nschemathesis: {sum(TRIED.values())} requests over {len(TRIED)} method/path pairs ({top}, …)")
        assert codes == {name: 0 for name in pp.procs}, codes


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_local_api_conforms_to_its_openapi_document(case: schemathesis.Case, gateways: ProcessPair) -> None:
    role = ROLE_FOR.get((case.method.upper(), case.path))
    headers = {"Authorization": f"Bearer {gateways.tokens[US][role]}"} if role else {}
    if case.query and "wait" in case.query:  # a valid long-poll really waits: keep it short
        try:
            if float(case.query["wait"]) > 0.2:
                case.query["wait"] = "0.2"
        except (TypeError, ValueError):
            pass
    TRIED[f"{case.method.upper()} {case.path}"] += 1
    case.call_and_validate(base_url=gateways.procs[US].url, headers=headers, timeout=15, excluded_checks=NOT_SENSIBLE)
