"""Configuration is bounded on both sides: `nan` (which compares false with every bound, so a NaN
skew window would admit a ten-year-old envelope), `inf`, huge and negative numbers and unknown keys
are refused at load, from the file and from the environment, naming the key and the rule."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import msgspec
import pytest

from customs_gateway.core.errors import ConfigError
from customs_gateway.service.pair import prepare_pair
from customs_gateway.startup.config import Config, PeerConfig, StoreConfig, load_config, render_config


def _numeric_fields() -> Iterator[tuple[str, type, msgspec.Meta]]:
    """Every int or float key as (`section.key`, type, its bounds)."""
    for section, cls in get_type_hints(Config).items():
        if not isinstance(cls, type) or not issubclass(cls, msgspec.Struct):
            continue
        for key, hint in get_type_hints(cls, include_extras=True).items():
            base = get_args(hint)[0] if get_origin(hint) is Annotated else hint
            if base in (int, float):
                metas = get_args(hint)[1:] if get_origin(hint) is Annotated else ()
                yield f"{section}.{key}", base, (metas or (msgspec.Meta(),))[0]


NUMERIC = list(_numeric_fields())
FLOATS = [name for name, base, _ in NUMERIC if base is float]


def _env(key: str, value: str) -> dict[str, str]:
    return {"CUSTOMS_GATEWAY_" + key.upper().replace(".", "__"): value}


def _toml(key: str, value: str) -> str:
    section, name = key.split(".")
    return f'identity = "US-CBP"\n[{section}]\n{name} = {value}\n'


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(render_config(Config(identity="US-CBP")), encoding="utf-8")
    return path


def _refused(path: Path, env: dict[str, str], key: str, code: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert (info.value.field, info.value.code) == (key, code)
    assert key in str(info.value)
    return info.value


def test_every_number_is_bounded_on_both_sides() -> None:
    assert len(NUMERIC) >= 20
    for name, _, meta in NUMERIC:
        assert (meta.ge, meta.gt) != (None, None), f"{name} has no lower bound"
        assert (meta.le, meta.lt) != (None, None), f"{name} has no upper bound"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "0", "-5"])
@pytest.mark.parametrize("key", FLOATS)
def test_non_finite_huge_or_non_positive_numbers_from_env_are_refused(config_file: Path, key: str, value: str) -> None:
    err = _refused(config_file, _env(key, value), key, "config.range")
    assert "must be a number >" in str(err) and "<=" in str(err)


@pytest.mark.parametrize("value", ["nan", "+inf", "-inf", "1e308", "-5.0"])
@pytest.mark.parametrize("key", FLOATS)
def test_non_finite_huge_or_negative_numbers_in_the_file_are_refused(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(_toml(key, value), encoding="utf-8")
    _refused(path, {}, key, "config.range")


def test_the_skew_window_refuses_nan_with_a_message_naming_key_and_rule(config_file: Path) -> None:
    err = _refused(config_file, _env("security.skew_seconds", "nan"), "security.skew_seconds", "config.range")
    assert str(err) == "security.skew_seconds must be a number > 0 and <= 86400 (got 'nan')"


@pytest.mark.parametrize(("key", "_base", "meta"), NUMERIC, ids=[n for n, _, _ in NUMERIC])
def test_each_bound_admits_its_edge_and_refuses_past_it(
    config_file: Path, key: str, _base: type, meta: msgspec.Meta
) -> None:
    section, name = key.split(".")
    for inclusive, exclusive, step in ((meta.ge, meta.gt, -1), (meta.le, meta.lt, 1)):
        edge = inclusive if inclusive is not None else exclusive
        assert edge is not None
        past = edge if inclusive is None else edge + step
        _refused(config_file, _env(key, str(past)), key, "config.range")
        if inclusive is not None:
            # retry_cap_seconds must stay at least retry_base_seconds (a rule across keys).
            env = _env("delivery.retry_cap_seconds", "86400") | _env(key, str(edge))
            cfg = load_config(config_file, env=env)
            assert getattr(getattr(cfg, section), name) == edge


@pytest.mark.parametrize(
    ("env", "key", "code"),
    [
        ({"CUSTOMS_GATEWAY_SECURITY__SKEW": "300"}, "security.skew", "config.unknown_key"),
        ({"CUSTOMS_GATEWAY_NOT_A_KEY": "1"}, "not_a_key", "config.unknown_key"),
        ({"CUSTOMS_GATEWAY_LOCAL_API__PORT": "eighty"}, "local_api.port", "config.type"),
        (
            {"CUSTOMS_GATEWAY_SECURITY__ALLOW_INSECURE_PEER_HTTP": "maybe"},
            "security.allow_insecure_peer_http",
            "config.type",
        ),
        ({"CUSTOMS_GATEWAY_SECURITY": "x"}, "security", "config.type"),
        ({"CUSTOMS_GATEWAY_STORE__BACKEND": "mysql"}, "store.backend", "config.enum"),
        ({"CUSTOMS_GATEWAY_LOG_LEVEL": "verbose"}, "log_level", "config.enum"),
        ({"CUSTOMS_GATEWAY_PEER__IDENTITY": "CN GACC"}, "peer.identity", "config.invalid"),
        ({"CUSTOMS_GATEWAY_IDENTITY": ""}, "identity", "config.required"),
        ({"CUSTOMS_GATEWAY_STORE__BACKEND": "postgres"}, "store.dsn", "config.required"),
        ({"CUSTOMS_GATEWAY_DELIVERY__RETRY_CAP_SECONDS": "0.1"}, "delivery.retry_cap_seconds", "config.range"),
        ({"CUSTOMS_GATEWAY_PEER__URL": "ftp://peer"}, "peer.url", "config.invalid"),
    ],
)
def test_invalid_values_name_the_key_and_the_rule(config_file: Path, env: dict[str, str], key: str, code: str) -> None:
    _refused(config_file, env, key, code)


def test_enum_errors_list_the_allowed_values(config_file: Path) -> None:
    err = _refused(config_file, {"CUSTOMS_GATEWAY_STORE__BACKEND": "mysql"}, "store.backend", "config.enum")
    assert str(err) == "store.backend must be one of sqlite, postgres (got 'mysql')"


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('identity = "US-CBP"\n[security]\nskew_second = 30\n', encoding="utf-8")
    _refused(path, {}, "security.skew_second", "config.unknown_key")


@pytest.mark.parametrize(("value", "expected"), [("yes", True), ("TRUE", True), ("1", True), ("no", False)])
def test_environment_strings_become_the_key_type(config_file: Path, value: str, expected: bool) -> None:
    env = {
        "CUSTOMS_GATEWAY_SECURITY__ALLOW_INSECURE_PEER_HTTP": value,
        "CUSTOMS_GATEWAY_SECURITY__SKEW_SECONDS": "120.5",
        "CUSTOMS_GATEWAY_LOCAL_API__PORT": "8081",
    }
    cfg = load_config(config_file, env=env)
    assert cfg.security.allow_insecure_peer_http is expected
    assert (cfg.security.skew_seconds, cfg.local_api.port) == (120.5, 8081)


def test_a_prepared_pair_loads_and_base_dir_is_the_file_directory(tmp_path: Path) -> None:
    home = prepare_pair(tmp_path)["US-CBP"]
    cfg = load_config(home.config_path, env={"CUSTOMS_GATEWAY_BASE_DIR": "/elsewhere"})
    assert cfg.base_dir == str(home.config_path.resolve().parent)


ODD = ["C:\\gateway\\keys", "\\\\server\\share\\tls", 'keys "quoted"', "tab\there", "línea/密钥", "trailing\\", "a'b"]


@pytest.mark.parametrize("path", ODD)
def test_render_config_writes_toml_that_reads_back_the_same(tmp_path: Path, path: str) -> None:
    cfg = Config(
        identity="US-CBP",
        keys_dir=path,
        tls_dir=path,
        log_format="json",
        peer=PeerConfig(identity="CN-GACC", url="https://gw.gacc.example:8443", bundle=path),
        store=StoreConfig(backend="postgres", path=path, dsn=f"postgresql://cgw:{path}@db/cgw", lease_seconds=5.5),
    )
    text = render_config(cfg)
    assert "base_dir" not in text
    assert msgspec.convert(tomllib.loads(text), Config) == cfg
    (tmp_path / "gateway.toml").write_text(text, encoding="utf-8")
    back = load_config(tmp_path / "gateway.toml", env={})
    assert back == msgspec.structs.replace(cfg, base_dir=str(tmp_path.resolve()))


def test_render_config_of_the_defaults_round_trips() -> None:
    cfg = Config(identity="US-CBP")
    data: dict[str, Any] = tomllib.loads(render_config(cfg))
    assert set(data) == set(msgspec.structs.asdict(cfg)) - {"base_dir"}
    assert msgspec.convert(data, Config) == cfg


def test_every_key_has_a_row_in_docs_configuration() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    keys: list[str] = []
    for name, cls in get_type_hints(Config).items():
        if isinstance(cls, type) and issubclass(cls, msgspec.Struct):
            keys += [f.name for f in msgspec.structs.fields(cls)]
        elif name != "base_dir":
            keys.append(name)
    assert [k for k in keys if f"| `{k}` |" not in docs] == []


@pytest.mark.parametrize(
    "env",
    [
        {"CUSTOMS_GATEWAY_SECURITY": "x", "CUSTOMS_GATEWAY_SECURITY__SKEW_SECONDS": "60"},
        {"CUSTOMS_GATEWAY_SECURITY__SKEW_SECONDS": "60", "CUSTOMS_GATEWAY_SECURITY": "x"},
        {"CUSTOMS_GATEWAY_SECURITY__SKEW_SECONDS": "60", "CUSTOMS_GATEWAY_SECURITY__SKEW_SECONDS__X": "1"},
    ],
)
def test_a_section_set_whole_beside_its_keys_is_a_clear_error(config_file: Path, env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(config_file, env=env)
    assert e.value.code == "config.invalid" and e.value.field == "security"
    assert "CUSTOMS_GATEWAY_SECURITY__<KEY>" in e.value.detail


def test_console_idle_timeout_defaults_to_15_minutes_and_is_bounded(config_file: Path) -> None:
    assert load_config(config_file, env={}).console.idle_timeout_seconds == 900.0
    cfg = load_config(config_file, env=_env("console.idle_timeout_seconds", "300"))
    assert cfg.console.idle_timeout_seconds == 300.0
    key = "console.idle_timeout_seconds"
    err = _refused(config_file, _env(key, "30"), key, "config.range")
    assert str(err) == "console.idle_timeout_seconds must be a number >= 60 and <= 86400 (got '30')"
