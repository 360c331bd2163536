"""`customs-gateway keys …`: exchange, inspect and change keys (export, import-peer, list, rotate,
revoke, passphrase).

export, import-peer and list read or write public data only, so no passphrase is asked; rotate and
revoke ask the running gateway (admin token) so traffic never stops; passphrase re-encrypts the key
files offline. Each sub-verb is one `_register_*` function listed in `_SUB_VERBS`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from rich.markup import escape
from rich.table import Table

from ..core.bundle import KeyBundle, KeyRecord, SignedBundle
from ..core.encoding import format_ts
from ..core.errors import ConfigError, Conflict, KeyStateError
from ..core.rotation import EXPIRY_WARNING_DAYS, expiry
from ..core.tlscert import describe
from ..startup.config import Config
from ..startup.keystore import KeyStore, import_peer_bundle, read_signed_bundle, write_atomic
from .common import add_config_arg, console, get_passphrase, load_cli_config, print_json, result_console

_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(sub: _SubParsers) -> None:
    p = sub.add_parser("keys", help="export, import, list, rotate, renew and revoke keys; change the passphrase")
    ksub = p.add_subparsers(dest="keys_verb", metavar="VERB")
    for add in _SUB_VERBS:
        add(ksub)


# --- export --------------------------------------------------------------------------------


def _register_export(ksub: _SubParsers) -> None:
    p = ksub.add_parser("export", help="write our signed public key bundle (for the peer)")
    add_config_arg(p)
    p.add_argument("--out", type=Path, metavar="FILE", help="file to write (default: stdout)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (needs --out)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    config = load_cli_config(args)
    path = _own_bundle_path(config)
    signed = read_signed_bundle(path)
    bundle = signed.verify_self_signed()
    data = signed.to_bytes()
    if args.json and args.out is None:
        raise ConfigError("--json prints a summary on stdout: name the bundle file with --out", field="out")
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        write_atomic(args.out, data, 0o644)
    if args.json:
        print_json(
            {
                "identity": bundle.identity,
                "serial": bundle.serial,
                "file": str(args.out),
                "fingerprint": signed.fingerprint(),
            }
        )
        return 0
    out = console()
    out.print(f"Exported the key bundle of [bold]{bundle.identity}[/] (serial {bundle.serial})")
    out.print(f"Fingerprint: [bold]{signed.fingerprint()}[/]")
    return 0


# --- import-peer ---------------------------------------------------------------------------


def _register_import(ksub: _SubParsers) -> None:
    p = ksub.add_parser("import-peer", help="verify and store the peer's signed key bundle")
    add_config_arg(p)
    p.add_argument("file", type=Path, help="the peer's exported bundle")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation (fingerprint checked already)")
    p.add_argument("--json", action="store_true", help="print a JSON summary (needs --yes)")
    p.add_argument("--replace", action="store_true", help="replace a stored bundle of another identity or serial")
    p.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    config = load_cli_config(args)
    try:
        data = args.file.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {args.file}: {e.strerror}", field="file") from e
    signed = SignedBundle.from_bytes(data)
    bundle = signed.verify_self_signed()
    if bundle.identity == config.identity:
        raise Conflict(
            f"{args.file} is the bundle of {config.identity}, our own identity; import the peer's",
            code="bundle.own_identity",
        )
    if config.peer.identity and bundle.identity != config.peer.identity:
        raise Conflict(
            f"{args.file} is the bundle of {bundle.identity}, but peer.identity is {config.peer.identity}",
            code="bundle.identity_mismatch",
        )
    if args.json and not args.yes:
        raise ConfigError("--json cannot ask for confirmation: pass --yes once the fingerprint is checked", field="yes")
    out = console()
    out.print(
        f"Peer identity: [bold]{bundle.identity}[/]  serial {bundle.serial}  issued {format_ts(bundle.issued_at)}"
    )
    if bundle.endpoint:
        out.print(f"Endpoint: {escape(bundle.endpoint)}")
    out.print(_table(bundle, f"keys of {bundle.identity}", dt.datetime.now(dt.UTC)))
    out.print(f"TLS certificate SHA-256: {_cert_fp(bundle)}")
    out.print(f"Bundle fingerprint: [bold]{signed.fingerprint()}[/]")
    if not args.yes:
        out.print("Compare this fingerprint with the one the peer read to you over a separate channel.")
        if not sys.stdin.isatty():
            raise ConfigError("not a terminal: pass --yes once the fingerprint is checked", field="yes")
        answer = out.input("Trust this bundle? Type [bold]yes[/] to import: ")
        if answer.strip().lower() != "yes":
            out.print("Not imported.")
            return 1
    dest = config.path(config.peer.bundle or f"peers/{bundle.identity}.bundle.json")
    import_peer_bundle(data, dest, own_identity=config.identity, replace=args.replace)
    out.print(f"[green]Imported[/] the key bundle of {bundle.identity} into {escape(str(dest))}")
    if args.json:
        print_json(
            {
                "identity": bundle.identity,
                "serial": bundle.serial,
                "file": str(dest),
                "fingerprint": signed.fingerprint(),
                "config_needs": {"peer.identity": bundle.identity, "peer.bundle": str(dest)}
                if not config.peer.bundle or not config.peer.identity
                else {},
            }
        )
    if not config.peer.bundle or not config.peer.identity:
        rel = dest.relative_to(config.path(".")) if dest.is_relative_to(config.path(".")) else dest
        out.print(
            f'Set \\[peer] identity = "{bundle.identity}" and bundle = "{escape(str(rel))}" in the configuration file.'
        )
    return 0


# --- list ----------------------------------------------------------------------------------


def _register_list(ksub: _SubParsers) -> None:
    p = ksub.add_parser("list", help="list our public keys (or the peer's with --peer)")
    add_config_arg(p)
    p.add_argument("--peer", action="store_true", help="list the imported peer bundle instead of our own")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=run_list)


def run_list(args: argparse.Namespace) -> int:
    config = load_cli_config(args)
    path = _peer_bundle_path(config) if args.peer else _own_bundle_path(config)
    signed = read_signed_bundle(path)
    bundle = signed.verify_self_signed()
    now = dt.datetime.now(dt.UTC)
    tls_end = expiry(bundle).get("tls")
    if args.json:
        print_json(
            {
                "identity": bundle.identity,
                "serial": bundle.serial,
                "issued_at": format_ts(bundle.issued_at),
                "fingerprint": signed.fingerprint(),
                "suites": list(bundle.suites),
                "endpoint": bundle.endpoint,
                "tls_certificate_sha256": _cert_fp(bundle),
                "tls_certificate_not_after": format_ts(tls_end) if tls_end else None,
                "tls_certificate_days_left": _days_left(tls_end, now) if tls_end else None,
                "tls_previous": [
                    {"sha256": _fp(pem), "pinned_until": format_ts(until)} for pem, until in bundle.tls_previous
                ],
                "keys": [_key_row(r, now) for r in bundle.keys],
            }
        )
        return 0
    out = result_console()
    out.print(_table(bundle, f"keys of {bundle.identity} (serial {bundle.serial}, {path})", now))
    out.print(f"Suites: {escape(', '.join(bundle.suites))}", soft_wrap=True)
    out.print(f"TLS certificate SHA-256: {_cert_fp(bundle)}", soft_wrap=True)
    if tls_end is not None:
        days = _days_left(tls_end, now)
        colour = "red" if days <= EXPIRY_WARNING_DAYS else "default"
        out.print(f"TLS certificate valid until {_minute(tls_end)} UTC ([{colour}]{days:g} days left[/])")
    for pem, until in bundle.tls_previous:
        out.print(f"Previous TLS certificate {_fp(pem)} pinned until {_minute(until)} UTC", soft_wrap=True)
    out.print(f"Bundle fingerprint: [bold]{signed.fingerprint()}[/]", soft_wrap=True)
    return 0


# --- shared --------------------------------------------------------------------------------


def _own_bundle_path(config: Config) -> Path:
    return config.path(config.keys_dir) / "bundle.json"


def _peer_bundle_path(config: Config) -> Path:
    if config.peer.bundle:
        return config.path(config.peer.bundle)
    if config.peer.identity:
        return config.path(f"peers/{config.peer.identity}.bundle.json")
    found = sorted(config.path("peers").glob("*.bundle.json"))
    if len(found) == 1:
        return found[0]
    raise ConfigError("set peer.bundle (or peer.identity) to choose the peer bundle", field="peer.bundle")


def _days_left(end: dt.datetime, now: dt.datetime) -> float:
    return round((end - now).total_seconds() / 86400, 1)


def _key_row(rec: KeyRecord, now: dt.datetime) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kid": rec.kid,
        "use": rec.use,
        "alg": rec.alg,
        "state": rec.state,
        "not_before": format_ts(rec.not_before),
        "not_after": format_ts(rec.not_after),
        "days_left": _days_left(rec.not_after, now),
        "fingerprint": hashlib.sha256(rec.public).hexdigest(),
    }
    if rec.revoked_at is not None:
        row["revoked_at"] = format_ts(rec.revoked_at)
    return row


def _table(bundle: KeyBundle, title: str, now: dt.datetime) -> Table:
    table = Table(title=escape(title))
    for col in ("kid", "use", "alg", "state", "not before (UTC)", "not after (UTC)", "days left"):
        table.add_column(col, no_wrap=True)
    table.add_column("public key SHA-256", overflow="fold")
    for rec in bundle.keys:
        row = _key_row(rec, now)
        in_use = rec.state == "active" and rec.revoked_at is None
        days = row["days_left"]
        left = f"[red]{days:g}[/]" if in_use and days <= EXPIRY_WARNING_DAYS else f"{days:g}" if in_use else "-"
        table.add_row(
            rec.kid,
            rec.use,
            rec.alg,
            rec.state if rec.revoked_at is None else f"{rec.state} ({_minute(rec.revoked_at)})",
            _minute(rec.not_before),
            _minute(rec.not_after),
            left,
            row["fingerprint"],
        )
    return table


def _minute(when: dt.datetime) -> str:
    return format_ts(when)[:16].replace("T", " ")


def _cert_fp(bundle: KeyBundle) -> str:
    return _fp(bundle.tls_certificate)


def _fp(pem: str) -> str:
    return describe(pem)[0]


def _register_rotate(ksub: _SubParsers) -> None:
    p = ksub.add_parser(
        "rotate",
        help="rotate our signing or encryption keys on the running gateway (announced to the peer)",
    )
    p.add_argument("--kind", required=True, choices=("signing", "encryption"))
    _admin_client_args(p)
    p.set_defaults(func=run_rotate)


def _register_renew(ksub: _SubParsers) -> None:
    p = ksub.add_parser(
        "renew",
        help="renew our keys or TLS certificate with a later expiry on the running gateway (announced to the peer)",
    )
    p.add_argument("--kind", required=True, choices=("signing", "encryption", "witness", "tls"))
    p.add_argument(
        "--valid-days", type=int, default=730, metavar="N", help="validity of the new keys or certificate (default 730)"
    )
    _admin_client_args(p)
    p.set_defaults(func=run_renew)


def _register_revoke(ksub: _SubParsers) -> None:
    p = ksub.add_parser("revoke", help="revoke one of our keys on the running gateway (announced to the peer)")
    p.add_argument("kid", help="key id to revoke (see `keys list`)")
    p.add_argument("--reason", required=True, help="why (recorded in the bundle and the audit log)")
    _admin_client_args(p)
    p.set_defaults(func=run_revoke)


def _register_passphrase(ksub: _SubParsers) -> None:
    p = ksub.add_parser(
        "passphrase",
        help="re-encrypt every private key under a new passphrase (run while the gateway is stopped)",
    )
    add_config_arg(p)
    p.add_argument("--passphrase-file", help="file with the CURRENT passphrase (else env or prompt)")
    p.add_argument("--new-passphrase-file", help="file with the NEW passphrase (else a prompt, asked twice)")
    p.set_defaults(func=run_passphrase)


def _admin_client_args(p: argparse.ArgumentParser) -> None:
    add_config_arg(p)
    p.add_argument("--url", help="local API base URL (default: from the config)")
    p.add_argument("--token-file", help="file with an admin bearer token (default: $CUSTOMS_GATEWAY_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def _admin_call(args: argparse.Namespace, path: str, body: dict[str, Any], *, hint: str | None = None) -> int:
    from .client_cmd import admin_post

    res = admin_post(args, path, body)
    if res is None:
        return 3
    if args.json:
        print_json(res)
        return 0
    out = result_console()
    for k, v in res.items():
        shown = ", ".join(str(x) for x in v) if isinstance(v, list) else v
        out.print(f"{k.replace('_', ' ')}: {escape(str(shown))}", soft_wrap=True)
    if hint:
        console().print(hint)
    return 0


_SWITCH_HINT = "The new key is used once the peer has receipted the announcement; see `keys list`."


def run_rotate(args: argparse.Namespace) -> int:
    return _admin_call(args, "/v1/admin/keys/rotate", {"kind": args.kind}, hint=_SWITCH_HINT)


def run_renew(args: argparse.Namespace) -> int:
    return _admin_call(
        args, "/v1/admin/keys/renew", {"kind": args.kind, "valid_days": args.valid_days}, hint=_SWITCH_HINT
    )


def run_revoke(args: argparse.Namespace) -> int:
    return _admin_call(args, f"/v1/admin/keys/{args.kid}/revoke", {"reason": args.reason})


def run_passphrase(args: argparse.Namespace) -> int:
    cfg = load_cli_config(args)
    store = KeyStore(cfg.path(cfg.keys_dir), cfg.path(cfg.tls_dir))
    pid = store.running_pid()
    if pid is not None:
        # The running gateway keeps the old passphrase for its later rotations: changing it under
        # it would make the next `keys rotate` fail with a wrong passphrase.
        raise KeyStateError(
            f"the gateway is running with these keys (pid {pid}): stop it, change the passphrase, start it again",
            code="keys.in_use",
            status=409,
        )
    old = get_passphrase(args)
    if args.new_passphrase_file:
        new = Path(args.new_passphrase_file).read_bytes().removesuffix(b"\n")
    else:
        new = getpass.getpass("New passphrase: ").encode("utf-8")
        if getpass.getpass("Repeat the new passphrase: ").encode("utf-8") != new:
            console().print("[red]the two passphrases differ[/]")
            return 2
    store.change_passphrase(old, new)
    console().print("every private key is now encrypted under the new passphrase; restart the gateway")
    return 0


_SUB_VERBS: tuple[Callable[[_SubParsers], None], ...] = (
    _register_export,
    _register_import,
    _register_list,
    _register_rotate,
    _register_renew,
    _register_revoke,
    _register_passphrase,
)
