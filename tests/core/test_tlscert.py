"""TLS certificate renewal in the bundle: the vectors, the possession proof, the pin set over
time, and every way an announced certificate change can be forged (decision 0008)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from customs_gateway.core.bundle import MAX_TLS_PREVIOUS, KeyBundle, SignedBundle
from customs_gateway.core.encoding import parse_ts, unb64url
from customs_gateway.core.errors import GatewayError
from customs_gateway.core.rotation import check_update, renew_tls
from customs_gateway.core.tlscert import check_possession, pinned_fingerprints

ROOT = Path(__file__).resolve().parents[2]
V = json.loads((ROOT / "tests" / "vectors" / "tls-renewal.json").read_text(encoding="utf-8"))
VALID = V["valid"]
NOW = parse_ts(VALID["now"])


def signed(field: str, d: dict[str, Any] = VALID) -> SignedBundle:
    return SignedBundle.from_bytes(unb64url(d[field]))


def test_the_valid_renewal_is_accepted_and_pins_old_and_new_for_the_overlap() -> None:
    current = signed("current_bundle").verify_self_signed()
    renewed = signed("renewed_bundle")
    new = check_update(current, renewed, NOW)
    check_possession(new.tls_certificate, renewed.bundle_bytes, unb64url(VALID["proof"]))
    both = {VALID["old_certificate_sha256"], VALID["new_certificate_sha256"]}
    assert pinned_fingerprints(new.tls_pins(NOW), NOW) == both
    until = parse_ts(VALID["overlap_until"])
    assert pinned_fingerprints(new.tls_pins(until - dt.timedelta(seconds=1)), until) == both
    assert pinned_fingerprints(new.tls_pins(until), until) == {VALID["new_certificate_sha256"]}
    # A pinned certificate counts only inside its own X.509 validity, read on our clock.
    late = NOW + dt.timedelta(days=3 * 365)
    assert pinned_fingerprints(new.tls_pins(late), late) == frozenset()


def test_the_bundle_bytes_round_trip() -> None:
    b = signed("renewed_bundle")
    assert b.bundle.to_bytes() == b.bundle_bytes  # tls_previous is part of the signed bytes


@pytest.mark.parametrize("case", V["invalid"], ids=lambda c: c["comment"])
def test_invalid_vectors(case: dict[str, Any]) -> None:
    current = signed("current_bundle").verify_self_signed()
    if "previous" in case:
        current = check_update(current, signed("previous", case), NOW)
    with pytest.raises(GatewayError) as info:
        announced = signed("bundle", case)
        new = check_update(current, announced, NOW)
        proof = unb64url(case["proof"]) if case["proof"] is not None else None
        check_possession(new.tls_certificate, announced.bundle_bytes, proof)
    assert info.value.code == case["code"], info.value.detail


def test_the_vectors_are_what_the_generator_writes() -> None:
    script = ROOT / "scripts" / "make_tls_vectors.py"
    assert subprocess.run([sys.executable, str(script), "--check"], check=False).returncode == 0


def test_renewals_beyond_the_pin_limit_drop_the_pins_that_end_first() -> None:
    """`renew_tls` keeps at most MAX_TLS_PREVIOUS pins: expired ones go first, then those whose
    overlap ends first; the certificate replaced now is always pinned; each bundle reads back
    (the peer refuses more pins; that the peer follows each one is shown in test_renewal.py)."""
    current = signed("current_bundle").verify_self_signed()
    certs = [f"-----BEGIN CERTIFICATE-----\ncert {i}\n-----END CERTIFICATE-----\n" for i in range(13)]
    previous = [(certs[i], NOW + dt.timedelta(days=1 + i)) for i in range(MAX_TLS_PREVIOUS)]
    full = dataclasses.replace(current, tls_certificate=certs[10], tls_previous=tuple(previous))
    renewed = renew_tls(full, certs[11], NOW + dt.timedelta(days=8), NOW)
    assert len(renewed.tls_previous) == MAX_TLS_PREVIOUS
    assert renewed.tls_previous[-1] == (certs[10], NOW + dt.timedelta(days=8))  # the one presented now
    assert [pem for pem, _ in renewed.tls_previous[:-1]] == certs[1:MAX_TLS_PREVIOUS]  # ends first: dropped
    assert KeyBundle.from_bytes(renewed.to_bytes()) == renewed
    # Pins whose overlap has ended are dropped before any live one; order is kept.
    later = NOW + dt.timedelta(days=2, hours=1)
    again = renew_tls(renewed, certs[12], later + dt.timedelta(days=8), later)
    assert [pem for pem, _ in again.tls_previous] == [*certs[2:MAX_TLS_PREVIOUS], certs[10], certs[11]]
