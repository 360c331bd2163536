"""Configuration: one typed object built once at start-up from a TOML file plus environment.

Paths in the file are relative to the file's directory. Environment overrides use the prefix
`CUSTOMS_GATEWAY_` and the dotted key in upper case with `__` for the dot, e.g.
`CUSTOMS_GATEWAY_LOCAL_API__PORT=8081`. Errors name the key (`ConfigError.field`).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from ..core.errors import ConfigError

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
    busy_timeout_ms: int = 5000
    lease_seconds: float = 60.0  # postgres: how long a crashed replica's outbox claim blocks its peer lane


@dataclass(frozen=True)
class DeliveryConfig:
    batch_max: int = 200
    retry_base_seconds: float = 0.5
    retry_cap_seconds: float = 60.0
    request_timeout_seconds: float = 30.0
    default_ttl_seconds: int = 7 * 24 * 3600
    #: After this long without a verified answer from the peer, /readyz reports it unreachable.
    peer_unreachable_after_seconds: float = 900.0


@dataclass(frozen=True)
class SecurityConfig:
    skew_seconds: float = 300.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 500
    allow_insecure_peer_http: bool = False  # dev only; logged loudly
    rate_limit_per_second: float = 2000.0  # per token, sustained
    rate_limit_burst: int = 4000  # per token
    max_long_polls_per_token: int = 8
    max_peer_requests: int = 8  # concurrent requests on the peer API
    body_read_timeout_seconds: float = 30.0


@dataclass(frozen=True)
class AuditConfig:
    checkpoint_every_entries: int = 1000
    checkpoint_every_seconds: float = 60.0


@dataclass(frozen=True)
class PerformanceConfig:
    #: Worker processes for envelope crypto (HPKE holds the GIL; processes use every core).
    #: 0 runs it in a thread of the gateway process.
    crypto_processes: int = 2


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
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)

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
    if cfg.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("log_level must be debug, info, warning or error", field="log_level", code="config.enum")
    positive = {
        "delivery.batch_max": cfg.delivery.batch_max,
        "delivery.retry_base_seconds": cfg.delivery.retry_base_seconds,
        "delivery.retry_cap_seconds": cfg.delivery.retry_cap_seconds,
        "delivery.request_timeout_seconds": cfg.delivery.request_timeout_seconds,
        "delivery.default_ttl_seconds": cfg.delivery.default_ttl_seconds,
        "delivery.peer_unreachable_after_seconds": cfg.delivery.peer_unreachable_after_seconds,
        "security.skew_seconds": cfg.security.skew_seconds,
        "security.max_body_bytes": cfg.security.max_body_bytes,
        "security.max_batch": cfg.security.max_batch,
        "security.rate_limit_per_second": cfg.security.rate_limit_per_second,
        "security.rate_limit_burst": cfg.security.rate_limit_burst,
        "security.max_long_polls_per_token": cfg.security.max_long_polls_per_token,
        "security.max_peer_requests": cfg.security.max_peer_requests,
        "security.body_read_timeout_seconds": cfg.security.body_read_timeout_seconds,
        "audit.checkpoint_every_entries": cfg.audit.checkpoint_every_entries,
        "audit.checkpoint_every_seconds": cfg.audit.checkpoint_every_seconds,
        "store.busy_timeout_ms": cfg.store.busy_timeout_ms,
        "store.lease_seconds": cfg.store.lease_seconds,
    }
    for key, value in positive.items():
        if not (value > 0 and math.isfinite(value)):  # also refuses nan and inf
            raise ConfigError(f"{key} must be a positive finite number", field=key, code="config.range")
    if not 0 <= cfg.performance.crypto_processes <= 64:
        raise ConfigError(
            "performance.crypto_processes must be 0..64",
            field="performance.crypto_processes",
            code="config.range",
        )
    if cfg.delivery.retry_cap_seconds < cfg.delivery.retry_base_seconds:
        raise ConfigError(
            "delivery.retry_cap_seconds must be at least retry_base_seconds",
            field="delivery.retry_cap_seconds",
            code="config.range",
        )
    if cfg.delivery.default_ttl_seconds > 30 * 24 * 3600:
        raise ConfigError(
            "delivery.default_ttl_seconds is at most 30 days", field="delivery.default_ttl_seconds", code="config.range"
        )
    if cfg.peer.url and not cfg.peer.url.startswith(("https://", "http://")):
        raise ConfigError("peer.url must be the peer's https:// base URL", field="peer.url", code="config.invalid")
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
        f"identity = {_toml_str(cfg.identity)}",
        f"keys_dir = {_toml_str(cfg.keys_dir)}",
        f"tls_dir = {_toml_str(cfg.tls_dir)}",
        f"log_format = {_toml_str(cfg.log_format)}",
        f"log_level = {_toml_str(cfg.log_level)}",
    ]
    for section in ("local_api", "peer_api", "peer", "store", "delivery", "security", "audit", "performance"):
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
                lines.append(f"{f.name} = {_toml_str(str(v))}")
    return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    """A TOML basic string: backslashes (Windows paths), quotes and control characters escaped."""
    out = ['"']
    for ch in value:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
