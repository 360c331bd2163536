"""Configuration: one typed object built once at start-up from a TOML file plus environment.

Paths in the file are relative to the file's directory. Environment overrides use the prefix
`CUSTOMS_GATEWAY_` and the dotted key in upper case with `__` for the dot, e.g.
`CUSTOMS_GATEWAY_LOCAL_API__PORT=8081`. Errors name the key (`ConfigError.field`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from .core.errors import ConfigError

ENV_PREFIX = "CUSTOMS_GATEWAY_"
PASSPHRASE_ENV = "CUSTOMS_GATEWAY_PASSPHRASE"  # noqa: S105 - the variable name
#: Variables with our prefix that are not configuration keys (secrets, client settings, tests).
RESERVED_ENV = frozenset(
    {PASSPHRASE_ENV, "CUSTOMS_GATEWAY_CONFIG", "CUSTOMS_GATEWAY_TOKEN", "CUSTOMS_GATEWAY_TEST_PG_DSN"}
)


@dataclass(frozen=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class PeerConfig:
    """The peer administration: its identity, where to reach it, and its imported bundle."""

    identity: str = ""
    url: str = ""  # base URL of its peer API, e.g. https://gw.peer.example:8443
    bundle: str = ""  # path of the imported signed bundle


@dataclass(frozen=True)
class StoreConfig:
    backend: str = "sqlite"  # "sqlite" | "postgres"
    path: str = "data/gateway.db"
    dsn: str = ""


@dataclass(frozen=True)
class DeliveryConfig:
    batch_max: int = 200
    retry_base_seconds: float = 0.5
    retry_cap_seconds: float = 60.0
    request_timeout_seconds: float = 30.0
    default_ttl_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True)
class SecurityConfig:
    skew_seconds: float = 300.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 500
    allow_insecure_peer_http: bool = False  # dev only; logged loudly


@dataclass(frozen=True)
class AuditConfig:
    checkpoint_every_entries: int = 1000
    checkpoint_every_seconds: float = 60.0


@dataclass(frozen=True)
class Config:
    identity: str = ""
    base_dir: str = "."
    keys_dir: str = "keys"
    tls_dir: str = "tls"
    log_format: str = "auto"  # "auto" | "json" | "console"
    log_level: str = "info"
    local_api: ListenerConfig = field(default_factory=ListenerConfig)
    peer_api: ListenerConfig = field(default_factory=lambda: ListenerConfig(port=8443))
    peer: PeerConfig = field(default_factory=PeerConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def path(self, rel: str) -> Path:
        """Resolve a configured path relative to the config file's directory."""
        p = Path(rel)
        return p if p.is_absolute() else Path(self.base_dir) / p


T = TypeVar("T")


def _build(cls: type[T], data: Mapping[str, Any], prefix: str) -> T:
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in known:
            raise ConfigError(
                f"unknown configuration key {prefix}{key}", field=f"{prefix}{key}", code="config.unknown_key"
            )
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value, hint, name = data[f.name], hints[f.name], f"{prefix}{f.name}"
        if is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a table", field=name, code="config.type")
            kwargs[f.name] = _build(hint, value, name + ".")  # type: ignore[arg-type]
            continue
        kwargs[f.name] = _coerce(value, hint, name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false", field=name, code="config.type")
        return value
    if hint is int:
        try:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{name} must be an integer", field=name, code="config.type") from e
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{name} must be a number", field=name, code="config.type") from e
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string", field=name, code="config.type")
    return value


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in env.items():
        if not k.startswith(ENV_PREFIX) or k in RESERVED_ENV:
            continue
        parts = k[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _validate(cfg: Config) -> Config:
    if not cfg.identity:
        raise ConfigError('identity must be set (e.g. "US-CBP")', field="identity", code="config.required")
    for name, lst in (("local_api", cfg.local_api), ("peer_api", cfg.peer_api)):
        if not 0 <= lst.port <= 65535:
            raise ConfigError(f"{name}.port must be 0..65535", field=f"{name}.port", code="config.range")
    if cfg.store.backend not in ("sqlite", "postgres"):
        raise ConfigError("store.backend must be sqlite or postgres", field="store.backend", code="config.enum")
    if cfg.store.backend == "postgres" and not cfg.store.dsn:
        raise ConfigError("store.dsn is required for the postgres backend", field="store.dsn", code="config.required")
    if cfg.log_format not in ("auto", "json", "console"):
        raise ConfigError("log_format must be auto, json or console", field="log_format", code="config.enum")
    if cfg.delivery.batch_max < 1 or cfg.security.max_batch < 1:
        raise ConfigError("batch sizes must be at least 1", field="delivery.batch_max", code="config.range")
    if cfg.security.skew_seconds <= 0:
        raise ConfigError("security.skew_seconds must be positive", field="security.skew_seconds", code="config.range")
    return cfg


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read TOML, apply environment overrides, validate. Raises ConfigError naming the key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"configuration file {p} not found", field="config", code="config.missing") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"configuration file {p} is not valid TOML: {e}", field="config", code="config.toml") from e
    data = _merge(data, _env_overrides(os.environ if env is None else env))
    data.pop("base_dir", None)
    cfg = _build(Config, data, "")
    return _validate(replace(cfg, base_dir=str(p.resolve().parent)))


def render_config(cfg: Config) -> str:
    """TOML text for a config (written by `init`); every section present so operators see defaults."""
    lines = [
        f'identity = "{cfg.identity}"',
        f'keys_dir = "{cfg.keys_dir}"',
        f'tls_dir = "{cfg.tls_dir}"',
        f'log_format = "{cfg.log_format}"',
        f'log_level = "{cfg.log_level}"',
    ]
    for section in ("local_api", "peer_api", "peer", "store", "delivery", "security", "audit"):
        obj = getattr(cfg, section)
        lines.append("")
        lines.append(f"[{section}]")
        for f in fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, bool):
                lines.append(f"{f.name} = {'true' if v else 'false'}")
            elif isinstance(v, int | float):
                lines.append(f"{f.name} = {v}")
            else:
                lines.append(f'{f.name} = "{v}"')
    return "\n".join(lines) + "\n"
