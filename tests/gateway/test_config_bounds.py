"""Configuration numbers must be positive and finite: `nan` (which compares false with every
bound, so a NaN skew window would admit a ten-year-old envelope) and `inf` are refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from customs_gateway.core.errors import ConfigError
from customs_gateway.service.pair import prepare_pair
from customs_gateway.startup.config import Config, load_config, render_config


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-5"])
@pytest.mark.parametrize(
    "key", ["SECURITY__SKEW_SECONDS", "DELIVERY__RETRY_CAP_SECONDS", "DELIVERY__PEER_UNREACHABLE_AFTER_SECONDS"]
)
def test_non_finite_or_non_positive_numbers_are_refused(tmp_path: Path, key: str, value: str) -> None:
    home = prepare_pair(tmp_path)["US-CBP"]
    with pytest.raises(ConfigError) as info:
        load_config(home.config_path, env={f"CUSTOMS_GATEWAY_{key}": value})
    assert info.value.field == key.lower().replace("__", ".")
    assert info.value.code == "config.range"


def test_a_finite_override_loads(tmp_path: Path) -> None:
    home = prepare_pair(tmp_path)["US-CBP"]
    cfg = load_config(home.config_path, env={"CUSTOMS_GATEWAY_SECURITY__SKEW_SECONDS": "120.5"})
    assert cfg.security.skew_seconds == 120.5


@pytest.mark.parametrize("path", ["C:\\gateway\\keys", 'keys "quoted"', "tab\there", "línea/密钥", "trailing\\"])
def test_render_config_writes_toml_that_reads_back_the_same(tmp_path: Path, path: str) -> None:
    cfg = Config(identity="US-CBP", keys_dir=path, tls_dir=path)
    text = render_config(cfg)
    (tmp_path / "gateway.toml").write_text(text, encoding="utf-8")
    back = load_config(tmp_path / "gateway.toml", env={})
    assert (back.keys_dir, back.tls_dir) == (path, path)
