"""ISO code lists from pycountry, and country names in English and Chinese."""

from __future__ import annotations

from customs_gateway.core import refdata
from tests.fresh import fresh_python


def test_code_lists_come_from_pycountry_and_names_are_bilingual() -> None:
    assert len(refdata.COUNTRIES) >= 249 and {"US", "CN", "HK", "TW", "MO"} <= refdata.COUNTRIES
    assert "XK" not in refdata.COUNTRIES  # user-assigned, not ISO 3166-1
    assert {"USD", "CNY", "EUR", "XCG", "ZWG"} <= refdata.CURRENCIES
    assert not {"XAU", "XTS", "XXX", "ANG"} & refdata.CURRENCIES  # metals, test, none; withdrawn
    assert {"en", "zh"} <= refdata.LANGUAGES and "sh" not in refdata.LANGUAGES
    assert refdata.country_name("CN") == "China"
    assert refdata.country_name("US", "zh") == "美国"
    assert refdata.country_name("ZZ") is None


def test_code_sets_are_exactly_pycountrys_without_loading_its_databases() -> None:
    # Read from the data files directly (memory: docs/performance.md, session 13), the sets must
    # still be exactly what pycountry's own objects say, less the codes excluded on purpose.
    probe = (
        "import pycountry\n"
        "from customs_gateway.core import refdata\n"
        "loaded = [n for n in ('countries', 'currencies', 'languages') if getattr(pycountry, n)._is_loaded]\n"
        "print(','.join(loaded) or 'none')\n"
    )
    assert fresh_python(probe) == "none"

    import pycountry

    assert frozenset(c.alpha_2 for c in pycountry.countries) == refdata.COUNTRIES
    assert frozenset(c.alpha_3 for c in pycountry.currencies) - refdata._NOT_MONEY == refdata.CURRENCIES
    two_letter = frozenset(str(lang.alpha_2) for lang in pycountry.languages if hasattr(lang, "alpha_2"))
    assert two_letter - {"sh"} == refdata.LANGUAGES
