"""Configuration: one typed object built once at start-up from a TOML file plus environment.

Every section is a frozen msgspec Struct whose fields carry their bounds (`msgspec.Meta`), so a
value outside them (`nan`, `inf`, a negative timeout, an unknown key) is refused at load, naming the
key (`ConfigError.field`). Paths in the file are relative to the file's directory. Environment
overrides use the prefix `CUSTOMS_GATEWAY_` and the dotted key in upper case with `__` for the dot,
e.g. `CUSTOMS_GATEWAY_LOCAL_API__PORT=8081`; their strings are converted to the field's type.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args, get_origin, get_type_hints

import msgspec
import tomli_w

from ..core.bundle import IDENTITY_RE
from ..core.errors import ConfigError

ENV_PREFIX = "CUSTOMS_GATEWAY_"
PASSPHRASE_ENV = "CUSTOMS_GATEWAY_PASSPHRASE"  # noqa: S105 - the variable name
#: Variables with our prefix that are not configuration keys (secrets, client settings, tests).
RESERVED_ENV = frozenset(
    {PASSPHRASE_ENV, "CUSTOMS_GATEWAY_CONFIG", "CUSTOMS_GATEWAY_TOKEN", "CUSTOMS_GATEWAY_TEST_PG_DSN"}
)

_DAY: Final = 24 * 3600
#: An identity, or empty where it is optional (or checked as required in `_validate`).
Identity = Annotated[
    str,
    msgspec.Meta(
        pattern=f"^(?:{IDENTITY_RE.pattern})?$",
        description="an identity: 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
    ),
]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Host = Annotated[str, msgspec.Meta(max_length=255)]
ConfigPath = Annotated[str, msgspec.Meta(max_length=4096)]
#: Bounded on both sides: `gt=0` refuses nan and -inf, the upper bound refuses inf.
Seconds = Annotated[float, msgspec.Meta(gt=0, le=_DAY)]
ShortSeconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]
Count = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]


class ListenerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: Host = "127.0.0.1"
    port: Port = 8080


class PeerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The peer administration: its identity, where to reach it, and its imported bundle."""

    identity: Identity = ""
    url: Annotated[str, msgspec.Meta(max_length=2048)] = (
        ""  # base URL of its peer API, e.g. https://gw.peer.example:8443
    )
    bundle: ConfigPath = ""  # path of the imported signed bundle


class StoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: ConfigPath = "data/gateway.db"
    dsn: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    busy_timeout_ms: Annotated[int, msgspec.Meta(ge=1, le=3_600_000)] = 5000
    #: postgres: how long a crashed replica's outbox claim blocks its peer lane
    lease_seconds: Seconds = 60.0


class DeliveryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    retry_base_seconds: ShortSeconds = 0.5
    retry_cap_seconds: Seconds = 60.0
    request_timeout_seconds: ShortSeconds = 30.0
    default_ttl_seconds: Annotated[int, msgspec.Meta(ge=1, le=30 * _DAY)] = 7 * _DAY
    #: After this long without a verified answer from the peer, /readyz reports it unreachable.
    peer_unreachable_after_seconds: Annotated[float, msgspec.Meta(gt=0, le=30 * _DAY)] = 900.0
    #: Flow control (decision 0018): while more than this many submitted messages wait to be
    #: planned into a batch and the peer link works, a new submission waits (at most
    #: `backlog_wait_seconds`, then goes through) until delivery has caught up to half of it.
    #: 0 turns it off. A failing link never holds a submission.
    backlog_high: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 400
    backlog_wait_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0


class SecurityConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    skew_seconds: Seconds = 300.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1, le=1 << 30)] = 8 * 1024 * 1024
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    allow_insecure_peer_http: bool = False  # dev only; logged loudly
    rate_limit_per_second: Annotated[float, msgspec.Meta(gt=0, le=1_000_000_000)] = 2000.0  # per token, sustained
    rate_limit_burst: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] = 4000  # per token
    max_long_polls_per_token: Count = 8
    max_peer_requests: Count = 8  # concurrent requests on the peer API
    body_read_timeout_seconds: ShortSeconds = 30.0


class AuditConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    checkpoint_every_entries: Annotated[int, msgspec.Meta(ge=1, le=2_000_000_000)] = 1000
    checkpoint_every_seconds: Annotated[float, msgspec.Meta(gt=0, le=7 * _DAY)] = 60.0


class PerformanceConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    #: Worker processes for envelope crypto (HPKE holds the GIL; processes use every core).
    #: 0 runs it in a thread of the gateway process.
    crypto_processes: Annotated[int, msgspec.Meta(ge=0, le=64)] = 2


class ConsoleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The web console at /console/ on the local listener (DESIGN §14)."""

    #: A signed-in session unused this long ends (judged on the gateway's clock); at least a
    #: minute, at most a day.
    idle_timeout_seconds: Annotated[float, msgspec.Meta(ge=60, le=_DAY)] = 900.0


class FilesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Uploaded files (DESIGN §13): where their bytes go, and the limits."""

    #: The files directory; empty: `files` beside the SQLite database (store.path). Several
    #: PostgreSQL replicas need one shared directory here.
    dir: ConfigPath = ""
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1, le=1 << 40)] = 2 * 1024**3
    max_files_per_message: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    #: An upload untouched this long (and not yet named by a message) is removed.
    upload_ttl_seconds: Annotated[float, msgspec.Meta(gt=0, le=30 * _DAY)] = float(_DAY)
    #: A file's ciphertext the peer sent that no accepted envelope names (it never came, or was
    #: refused), untouched this long, is removed; a sender still retrying sends it again.
    peer_orphan_ttl_seconds: Annotated[float, msgspec.Meta(gt=0, le=30 * _DAY)] = float(_DAY)
    sweep_every_seconds: ShortSeconds = 60.0
    #: At most this many uploads looked at per sweep (bounded work; the next sweep goes on).
    sweep_batch: Count = 500


class RetentionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Disposal at `retain_until` (DESIGN §12): how often the worker looks, and how much it does
    per round (bounded work; a full round goes on at once)."""

    check_every_seconds: ShortSeconds = 300.0
    batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    identity: Identity = ""
    base_dir: str = "."  # set by load_config to the file's directory; never read from the file
    keys_dir: ConfigPath = "keys"
    tls_dir: ConfigPath = "tls"
    #: The agreement profile (DESIGN §12); empty: the worked example's, shipped with the software.
    agreement_profile: ConfigPath = ""
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    local_api: ListenerConfig = msgspec.field(default_factory=ListenerConfig)
    peer_api: ListenerConfig = msgspec.field(default_factory=lambda: ListenerConfig(port=8443))
    peer: PeerConfig = msgspec.field(default_factory=PeerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    delivery: DeliveryConfig = msgspec.field(default_factory=DeliveryConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    audit: AuditConfig = msgspec.field(default_factory=AuditConfig)
    performance: PerformanceConfig = msgspec.field(default_factory=PerformanceConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    files: FilesConfig = msgspec.field(default_factory=FilesConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)

    def path(self, rel: str) -> Path:
        """Resolve a configured path relative to the config file's directory."""
        p = Path(rel)
        return p if p.is_absolute() else Path(self.base_dir) / p

    def files_dir(self) -> Path:
        """Where uploaded files go: `files.dir`, else `files` beside the store's database file."""
        return self.path(self.files.dir) if self.files.dir else self.path(self.store.path).parent / "files"


_TRUTHY: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_AT: Final = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<at>[^`]*)`)?$", re.DOTALL)
_UNKNOWN: Final = re.compile(r"unknown field `(?P<key>[^`]*)`")


def _field_hint(path: list[str]) -> Any:
    """The annotated type of the key at `path` (None where the path names no field)."""
    hint: Any = Config
    for name in path:
        hints = get_type_hints(hint, include_extras=True) if isinstance(hint, type) else {}
        if name not in hints:
            return None
        hint = hints[name]
    return hint


def _rule(hint: Any) -> str:
    """What a field admits, in words: `a number > 0 and <= 86400`, `one of sqlite, postgres`."""
    base, metas = (get_args(hint)[0], get_args(hint)[1:]) if get_origin(hint) is Annotated else (hint, ())
    if get_origin(base) is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(base))
    kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(base, "a table")
    parts = []
    for meta in metas:
        if getattr(meta, "description", None):
            return str(meta.description)
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(meta, attr, None) is not None:
                parts.append(f"{sign} {getattr(meta, attr)}")
        if getattr(meta, "max_length", None) is not None:
            parts.append(f"of at most {meta.max_length} characters")
        if getattr(meta, "pattern", None) is not None:
            parts.append(f"matching {meta.pattern}")
    return " ".join([kind, " and ".join(parts)]).strip()


def _config_error(e: msgspec.ValidationError, data: Mapping[str, Any]) -> ConfigError:
    """One ConfigError naming the key (`security.skew_seconds`) and the rule it broke."""
    m = _AT.match(str(e))
    what, at = (m["what"], m["at"] or "") if m else (str(e), "")
    path = [p for p in at.split(".") if p]
    if unknown := _UNKNOWN.search(what):
        key = ".".join([*path, unknown["key"]])
        return ConfigError(f"unknown configuration key {key}", field=key, code="config.unknown_key")
    key = ".".join(path) or "config"
    got: Any = data
    for p in path:
        got = got.get(p) if isinstance(got, Mapping) else None
    hint = _field_hint(path)
    if what.startswith("Invalid enum value"):
        code = "config.enum"
    elif re.match(r"Expected `\w+` [<>]", what):
        code = "config.range"
    elif "regex" in what or "length" in what:
        code = "config.invalid"
    else:
        code = "config.type"
    return ConfigError(f"{key} must be {_rule(hint)} (got {got!r})", field=key, code=code)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in env.items():
        if not k.startswith(ENV_PREFIX) or k in RESERVED_ENV:
            continue
        parts = k[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise _section_clash(parts[0])
        if isinstance(node.get(parts[-1]), dict):
            raise _section_clash(parts[0])
        # Environment values are strings: yes/no for booleans as well as msgspec's true/false/1/0.
        is_bool = _field_hint(parts) is bool
        node[parts[-1]] = _TRUTHY.get(v.lower(), v) if is_bool else v
    return out


def _section_clash(section: str) -> ConfigError:
    name = f"{ENV_PREFIX}{section.upper()}"
    return ConfigError(
        f"{name} cannot be set beside {name}__<KEY>: a section's keys are set one by one, as {name}__<KEY>",
        field=section,
        code="config.invalid",
    )


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _validate(cfg: Config) -> Config:
    """Rules across fields that no single field's type can state."""
    if not cfg.identity:
        raise ConfigError('identity must be set (e.g. "US-CBP")', field="identity", code="config.required")
    if cfg.store.backend == "postgres" and not cfg.store.dsn:
        raise ConfigError("store.dsn is required for the postgres backend", field="store.dsn", code="config.required")
    if cfg.delivery.retry_cap_seconds < cfg.delivery.retry_base_seconds:
        raise ConfigError(
            "delivery.retry_cap_seconds must be at least retry_base_seconds",
            field="delivery.retry_cap_seconds",
            code="config.range",
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
    data["base_dir"] = str(p.resolve().parent)
    try:
        cfg = msgspec.convert(data, Config, strict=False)  # strict=False: "8081" from the environment is a port
    except msgspec.ValidationError as e:
        raise _config_error(e, data) from e
    return _validate(cfg)


def render_config(cfg: Config) -> str:
    """TOML text for a config (written by `init`); every section present so operators see defaults."""
    data = msgspec.to_builtins(cfg)
    del data["base_dir"]
    return tomli_w.dumps(data)
