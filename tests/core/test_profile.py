"""The agreement profile: the example loads, inconsistent profiles are refused naming the key path."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from customs_gateway.core.envelope import BUSINESS_TYPES
from customs_gateway.core.errors import ConfigError
from customs_gateway.core.profile import ProfileError, load_profile

EXAMPLE = Path(__file__).resolve().parents[2] / "keys-example" / "agreement-profile.toml"


def example() -> bytes:
    return EXAMPLE.read_bytes()


def refused(data: bytes) -> ProfileError:
    with pytest.raises(ProfileError) as e:
        load_profile(data)
    assert isinstance(e.value, ConfigError) and e.value.code == "profile.invalid"
    return e.value


def test_the_example_profile_loads() -> None:
    p = load_profile(example())
    assert p.agreement.id == "us-cn-cmaa-1999"
    assert [a.id for a in p.agreement.articles] == ["12", "13"]
    assert set(BUSINESS_TYPES) <= set(p.types) and "training-material" in p.types
    assert [c.id for c in p.confidentiality] == ["unrestricted", "law-enforcement-sensitive", "confidential"]
    ipr = p.purpose("ipr-enforcement")
    assert ipr is not None and ipr.zh == "知识产权执法"
    # Art. 12: evidence needs consent by default, and never plainly permitted for seizures or requests.
    for t in BUSINESS_TYPES:
        assert p.types[t].defaults.evidentiary_use == "with-consent" == p.types[t].defaults.onward_transfer
    for t in ("seizure-share", "information-request"):
        assert "permitted" not in p.types[t].evidentiary_use


def test_sha256_is_of_the_exact_bytes() -> None:
    data = example()
    assert load_profile(data).sha256 == hashlib.sha256(data).hexdigest()
    # A comment changes nothing parsed but changes the digest the peers compare.
    assert load_profile(data + b"\n# x\n").sha256 != load_profile(data).sha256


def test_a_default_outside_the_lists_is_refused() -> None:
    data = example().replace(b'purpose = "training"', b'purpose = "sightseeing"', 1)
    err = refused(data)
    assert err.field == "types.seminar-notice.defaults.purpose"
    assert "purposes" in err.detail


def test_a_default_permission_the_type_does_not_allow_is_refused() -> None:
    text = example().decode()
    start = text.index("[types.seizure-share.defaults]")
    text = text[:start] + text[start:].replace('evidentiary_use = "with-consent"', 'evidentiary_use = "permitted"', 1)
    assert refused(text.encode()).field == "types.seizure-share.defaults.evidentiary_use"


def test_a_default_retention_beyond_the_maximum_is_refused() -> None:
    data = (
        example()
        .replace(b"retention_days = 365\n", b"retention_days = 366\n")
        .replace(b"max_retention_days = 730", b"max_retention_days = 300")
    )
    fields = {e["field"] for e in refused(data).errors}
    assert "types.port-visit-invitation.defaults.retention_days" in fields


def test_a_missing_business_type_is_refused() -> None:
    text = example().decode()
    start = text.index("[types.consent-decision]")
    end = text.index("[types.training-material]")
    err = refused((text[:start] + text[end:]).encode())
    assert err.field == "types.consent-decision" and "every business message type" in err.detail


def test_an_unknown_type_is_refused() -> None:
    data = (
        example()
        .replace(b"[types.training-material]", b"[types.gossip]")
        .replace(b"[types.training-material.defaults]", b"[types.gossip.defaults]")
    )
    assert refused(data).field == "types.gossip"


def test_bad_toml_is_refused() -> None:
    assert "not valid TOML" in refused(example() + b"\n[agreement\n").detail
    assert "not valid TOML" in refused(b"\xff\xfe").detail


def test_an_unknown_key_is_refused_with_its_path() -> None:
    data = example().replace(b"max_retention_days = 365", b"max_retention_days = 365\nforever = true", 1)
    assert refused(data).field == "types.seminar-notice.forever"
    assert refused(example() + b"\n[extra]\nx = 1\n").field == "extra"


def test_a_level_requiring_a_reason_needs_a_default_reason() -> None:
    text = example().decode()
    start = text.index("[types.joint-operation.defaults]")
    cut = text.index("confidentiality_reason", start)
    text = text[:cut] + text[text.index("\n", cut) + 1 :]
    assert refused(text.encode()).field == "types.joint-operation.defaults.confidentiality_reason"


def test_bounds_and_duplicates_are_refused() -> None:
    data = example().replace(b"max_retention_days = 3650", b"max_retention_days = 0", 1)
    assert refused(data).field == "types.consent-request.max_retention_days"
    data = example().replace(b'id = "training"', b'id = "coordination"', 1)
    assert refused(data).field == "purposes[4].id"


def test_every_problem_is_listed() -> None:
    # Structure first (every shape problem listed), then consistency (every contradiction listed).
    err = refused(example().replace(b"max_retention_days = 3650", b"max_retention_days = -1") + b"\n[extra]\n")
    assert [e["field"] for e in err.errors] == [
        "extra",
        "types.consent-request.max_retention_days",
        "types.consent-decision.max_retention_days",
        "types.training-material.max_retention_days",
    ]
    err = refused(example().replace(b'purpose = "training"', b'purpose = "nope"'))
    assert [e["field"] for e in err.errors] == [
        "types.seminar-notice.defaults.purpose",
        "types.training-material.defaults.purpose",
    ]


def test_a_type_the_profile_does_not_describe() -> None:
    with pytest.raises(ProfileError):
        load_profile(example()).rules("gossip")


def test_types_that_are_not_tables_are_refused_once() -> None:
    text = example().decode()
    start = text.index("[types.seizure-share]")
    err = refused((text[:start] + "[types]\n").encode() + b'"seizure-share" = 3\n')
    fields = [e["field"] for e in err.errors]
    assert err.detail == "must be a table" and fields.count("types.seizure-share") == 1
    assert refused(b'types = "all"\n' + text[:start].encode()).field == "types"
