"""The refusal policy (core.refusals) is the one source of `retryable`: errors read it, receivers
sign it, the wire-format list shows every code, and a rebuilt worker error keeps its class."""

from __future__ import annotations

import re
from pathlib import Path

from customs_gateway.core import errors
from customs_gateway.core.ratelimit import RateLimited
from customs_gateway.core.refusals import REFUSALS, is_retryable
from customs_gateway.service.crypto_workers import Refused, refused_error

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_errors_take_retryable_from_the_policy() -> None:
    assert errors.StoreUnavailable("x").retryable and RateLimited("x", 1).retryable
    assert errors.GatewayError("x", code="replay.skew").retryable
    assert not errors.GatewayError("x", code="replay.conflict").retryable
    assert not errors.SignatureError("x").retryable
    assert not is_retryable("never.heard.of")
    for code, policy in REFUSALS.items():
        assert errors.GatewayError("x", code=code).retryable is policy.retryable


def test_every_error_class_default_code_is_listed_or_local() -> None:
    # Codes a receiver can sign come from these classes' defaults or explicit codes; the defaults
    # that can reach a peer must be in the table.
    for cls in (errors.SignatureError, errors.BindingError, errors.DecryptError, errors.DecodeError):
        assert cls.code in REFUSALS, cls


def test_the_wire_format_lists_every_refusal_code() -> None:
    text = (DOCS / "wire-format.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| (?:yes|no) \|", text, re.MULTILINE))
    assert listed == set(REFUSALS), sorted(listed ^ set(REFUSALS))


def test_a_worker_error_comes_back_as_its_class() -> None:
    err, mid, digest = refused_error(
        Refused("signature.invalid", "bad", "signature", 403, "m1", b"d", "SignatureError")
    )
    assert type(err) is errors.SignatureError and (err.code, err.field, err.status) == (
        "signature.invalid",
        "signature",
        403,
    )
    assert (mid, digest) == ("m1", b"d")
    from customs_gateway.core.epoch import EpochError

    outside, _, _ = refused_error(Refused("witness.epoch_invalid", "e", None, 409, "m", b"", "EpochError"))
    assert type(outside) is EpochError  # classes outside core.errors come back too
    odd, _, _ = refused_error(Refused("x.y", "?", None, 400, "m", b"", "NotAnErrorClass"))
    assert type(odd) is errors.GatewayError
