"""core.reference: which values a message is found by, how they are normalised and tagged."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from customs_gateway.core import reference
from customs_gateway.core.errors import SchemaError
from customs_gateway.core.storekey import StoreKey

KEY = bytes(range(32))
INVITATION = "01950000-0000-7000-8000-0000000000aa"


def test_normalize_folds_case_width_and_space() -> None:
    assert reference.normalize("  CBP-2026-0042 ") == "cbp-2026-0042"
    assert reference.normalize("ＣＢＰ－２０２６") == "cbp-2026"  # full-width forms (NFKC)
    assert reference.normalize("IPR\tSeminar\n\n 2027") == "ipr seminar 2027"
    assert reference.normalize("Straße") == "strasse"  # case folding, not lower()
    assert reference.normalize("海关 案件") == "海关 案件"


def test_references_per_type() -> None:
    assert reference.references("seizure-share", "m1", {"case_reference": "CBP-1"}) == ("cbp-1",)
    assert reference.references("port-visit-invitation", INVITATION, {"port": "CNSHA"}) == (INVITATION,)
    assert reference.references("port-visit-reply", "m2", {"invitation_id": INVITATION}) == (INVITATION,)
    assert reference.references("seminar-notice", "m3", {"title": "IPR  Seminar"}) == ("ipr seminar",)
    assert reference.references("ack", "m4", {"message_id": INVITATION}) == ()
    assert reference.references("seizure-share", "m5", {"case_reference": "   "}) == ()
    assert reference.references("seizure-share", "m6", {"case_reference": 42}) == ()


def test_tag_is_hmac_sha256_of_the_normalised_value_truncated_to_128_bits() -> None:
    want = hmac.new(KEY, b"cbp-2026-0042", hashlib.sha256).digest()[:16]
    assert reference.tag(KEY, " CBP-2026-0042") == want
    assert reference.tags(KEY, "seizure-share", "m", {"case_reference": "CBP-2026-0042"}) == (want,)
    assert reference.tag(bytes(32), "CBP-2026-0042") != want  # another gateway's key, another tag


def test_query_tag_refuses_empty_and_overlong_values() -> None:
    assert reference.query_tag(KEY, "cbp-2026-0042") == reference.tag(KEY, "CBP-2026-0042")
    for bad in ("", "  \t", "x" * 201):
        with pytest.raises(SchemaError) as e:
            reference.query_tag(KEY, bad)
        assert e.value.code == "schema.length" and e.value.field == "reference"


def test_store_key_subkeys_differ_by_label_and_kid_hides_the_secret() -> None:
    key = StoreKey(bytes(range(32)))
    assert key.derive(reference.INDEX_KEY_LABEL) != key.derive("another purpose")
    assert len(key.derive(reference.INDEX_KEY_LABEL)) == 32
    assert key.kid.startswith("store-") and bytes(range(32)).hex()[:12] not in key.kid
    assert "secret" not in repr(key) and bytes(range(32)).hex() not in repr(key)
    with pytest.raises(ValueError):
        StoreKey(b"short")


@given(st.text(max_size=60))
def test_normalize_is_idempotent(value: str) -> None:
    once = reference.normalize(value)
    assert reference.normalize(once) == once
