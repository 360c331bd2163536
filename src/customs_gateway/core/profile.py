"""The agreement profile (DESIGN §12): the TOML file both gateways load, saying what handling terms
an agreement allows — its purposes, confidentiality levels, retention maxima and defaults per type.

`load_profile(data)` takes the file's bytes (no I/O here) and returns a frozen `Profile` or raises
`ProfileError` naming the TOML key path (`types.seizure-share.defaults.purpose`) and the rule it
breaks, listing every problem found in `errors`. `Profile.sha256` is the SHA-256 of the exact bytes,
so two gateways compare profiles by digest.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
from msgspec import Meta

from .envelope import BUSINESS_TYPES
from .errors import ConfigError, SchemaError
from .schemas import MAX_ERRORS, check_struct

__all__ = [
    "LATER_TYPES",
    "PERMISSIONS",
    "PROFILE_TYPES",
    "Agreement",
    "Article",
    "Id",
    "Level",
    "Permission",
    "Profile",
    "ProfileError",
    "Purpose",
    "TypeDefaults",
    "TypeRules",
    "load_profile",
]

Permission = Literal["prohibited", "with-consent", "permitted"]
PERMISSIONS: Final[tuple[str, ...]] = get_args(Permission)
#: Types a profile may describe: every business type (all required) and those coming later.
LATER_TYPES: Final[tuple[str, ...]] = ()
PROFILE_TYPES: Final = BUSINESS_TYPES + LATER_TYPES

MAX_PROFILE_BYTES: Final = 256 * 1024
MAX_RETENTION_DAYS: Final = 36_500  # a century: beyond that a profile is surely mistyped

Id = Annotated[str, Meta(min_length=1, max_length=64, pattern="^[a-z0-9][a-z0-9.-]*$")]
Label = Annotated[str, Meta(min_length=1, max_length=200)]
Days = Annotated[int, Meta(ge=1, le=MAX_RETENTION_DAYS)]
Permissions = Annotated[list[Permission], Meta(min_length=1, max_length=3)]


class ProfileError(ConfigError):
    """The agreement profile is not valid TOML, breaks its schema, or contradicts itself."""

    code = "profile.invalid"


class _Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Article(_Entry, frozen=True, kw_only=True):
    id: Annotated[str, Meta(min_length=1, max_length=32)]
    title: Label | None = None


class Agreement(_Entry, frozen=True, kw_only=True):
    id: Id
    name: Label
    name_zh: Label | None = None
    articles: Annotated[list[Article], Meta(max_length=100)] = []


class Purpose(_Entry, frozen=True, kw_only=True):
    id: Id
    en: Label
    zh: Label


class Level(_Entry, frozen=True, kw_only=True):
    """One confidentiality level; the profile lists them from least to most restricted."""

    id: Id
    en: Label | None = None
    zh: Label | None = None
    reason_required: bool = False


class TypeDefaults(_Entry, frozen=True, kw_only=True):
    purpose: Id
    confidentiality: Id
    #: Stated when the default level requires a reason (Art. 13 of the example agreement).
    confidentiality_reason: Label | None = None
    onward_transfer: Permission
    evidentiary_use: Permission
    personal_data: bool
    retention_days: Days


class TypeRules(_Entry, frozen=True, kw_only=True):
    max_retention_days: Days
    onward_transfer: Permissions
    evidentiary_use: Permissions
    defaults: TypeDefaults


class _File(_Entry, frozen=True, kw_only=True):
    agreement: Agreement
    purposes: Annotated[list[Purpose], Meta(min_length=1, max_length=100)]
    confidentiality: Annotated[list[Level], Meta(min_length=1, max_length=20)]
    types: dict[str, Any]  # each entry checked by _type_rules, to name it in a refusal


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded, consistent agreement profile."""

    agreement: Agreement
    purposes: tuple[Purpose, ...]
    #: Least restricted first.
    confidentiality: tuple[Level, ...]
    types: dict[str, TypeRules]
    sha256: str
    #: The file's exact bytes (what crosses to a crypto worker, which loads them again).
    data: bytes = b""

    def rules(self, msg_type: str) -> TypeRules:
        """The type's rules; raises ProfileError for a type the profile does not describe."""
        try:
            return self.types[msg_type]
        except KeyError:
            raise ProfileError(
                "the agreement profile does not describe this message type", field=f"types.{msg_type[:64]}"
            ) from None

    def purpose(self, purpose_id: str) -> Purpose | None:
        return next((p for p in self.purposes if p.id == purpose_id), None)

    def level(self, level_id: str) -> Level | None:
        return next((c for c in self.confidentiality if c.id == level_id), None)


def load_profile(data: bytes) -> Profile:
    """Parse and check an agreement profile's bytes; raises ProfileError (every problem in `errors`).

    The file's shape is checked first, every problem listed; its consistency (defaults within the
    lists, every business type described) only once the shape is right."""
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError(f"the profile is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        tree = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ProfileError(f"not valid TOML: {e}") from None
    problems: list[tuple[str, str]] = []
    base: _File | None = None
    try:
        base = check_struct(_File, tree)
    except SchemaError as e:
        problems += [(_toml_path(x["field"]), x["detail"]) for x in e.errors]
    types = _type_rules(tree.get("types"), problems)
    if base is not None:
        problems += [
            (f"types.{t}", "every business message type needs an entry") for t in BUSINESS_TYPES if t not in base.types
        ]
        problems += _inconsistencies(base, types)
    if problems or base is None:
        field, detail = problems[0]
        err = ProfileError(detail, field=field)
        err.errors = tuple({"field": f, "code": ProfileError.code, "detail": d} for f, d in problems[:MAX_ERRORS])
        raise err
    return Profile(
        agreement=base.agreement,
        purposes=tuple(base.purposes),
        confidentiality=tuple(base.confidentiality),
        types=types,
        sha256=hashlib.sha256(data).hexdigest(),
        data=data,
    )


def _type_rules(tables: object, problems: list[tuple[str, str]]) -> dict[str, TypeRules]:
    """Each `[types.<name>]` table as TypeRules; problems go to `problems` with their key paths."""
    types: dict[str, TypeRules] = {}
    if not isinstance(tables, dict):
        return types  # the shape check has said so
    for name, entry in tables.items():
        if name not in PROFILE_TYPES:
            problems.append((f"types.{name[:64]}", "not a business message type"))
        elif not isinstance(entry, dict):
            problems.append((f"types.{name}", "must be a table"))
        else:
            try:
                types[name] = check_struct(TypeRules, entry)
            except SchemaError as e:
                problems += [(f"types.{name}" + _toml_path(x["field"], lead="."), x["detail"]) for x in e.errors]
    return types


def _inconsistencies(base: _File, types: dict[str, TypeRules]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, ids in (
        ("purposes", [p.id for p in base.purposes]),
        ("confidentiality", [c.id for c in base.confidentiality]),
    ):
        out += [(f"{key}[{i}].id", "an id listed twice") for i, x in enumerate(ids) if x in ids[:i]]
    purposes = {p.id for p in base.purposes}
    levels = {c.id: c for c in base.confidentiality}
    for name, rules in types.items():
        at = f"types.{name}"
        d = rules.defaults
        if d.purpose not in purposes:
            out.append((f"{at}.defaults.purpose", "the default purpose is not one of the profile's purposes"))
        level = levels.get(d.confidentiality)
        if level is None:
            out.append((f"{at}.defaults.confidentiality", "the default level is not one of the profile's levels"))
        elif level.reason_required and d.confidentiality_reason is None:
            out.append((f"{at}.defaults.confidentiality_reason", "the default level requires a reason"))
        if d.retention_days > rules.max_retention_days:
            out.append((f"{at}.defaults.retention_days", "the default retention is beyond max_retention_days"))
        for field in ("onward_transfer", "evidentiary_use"):
            allowed: list[str] = getattr(rules, field)
            if len(set(allowed)) != len(allowed):
                out.append((f"{at}.{field}", "a value listed twice"))
            if getattr(d, field) not in allowed:
                out.append((f"{at}.defaults.{field}", f"the default is not one of the type's allowed {field} values"))
    return out


_KEY_RE = re.compile(r'\["((?:[^"\\]|\\.)*)"\]')


def _toml_path(field: str, *, lead: str = "") -> str:
    """`$.types["seizure-share"].defaults` (a SchemaError field) as `types.seizure-share.defaults`."""
    rest = _KEY_RE.sub(r".\1", field.removeprefix("$"))
    return (lead + rest.lstrip(".")) if rest else ""
