"""ISO code lists from pycountry, and country names in English and Chinese."""

from __future__ import annotations

from customs_gateway.core import refdata


def test_code_lists_come_from_pycountry_and_names_are_bilingual() -> None:
    assert len(refdata.COUNTRIES) >= 249 and {"US", "CN", "HK", "TW", "MO"} <= refdata.COUNTRIES
    assert "XK" not in refdata.COUNTRIES  # user-assigned, not ISO 3166-1
    assert {"USD", "CNY", "EUR", "XCG", "ZWG"} <= refdata.CURRENCIES
    assert not {"XAU", "XTS", "XXX", "ANG"} & refdata.CURRENCIES  # metals, test, none; withdrawn
    assert {"en", "zh"} <= refdata.LANGUAGES and "sh" not in refdata.LANGUAGES
    assert refdata.country_name("CN") == "China"
    assert refdata.country_name("US", "zh") == "美国"
    assert refdata.country_name("ZZ") is None
