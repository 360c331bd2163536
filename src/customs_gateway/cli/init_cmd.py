"""`customs-gateway init`: set up one administration's gateway home (keys, TLS, config, data).

Writes DIR/gateway.toml (paths relative to it) and the 0700 directories keys/, tls/ and data/,
generates the identity's keys and self-signed TLS certificate, and prints the key ids, the bundle
fingerprint to read to the peer, and the next steps. Refuses to touch an existing home.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
from pathlib import Path

from rich.markup import escape

from ..core.bundle import is_valid_identity
from ..core.errors import ConfigError, Conflict
from ..core.keyfile import DEFAULT_MEMLIMIT, DEFAULT_OPSLIMIT
from ..startup.config import Config, ListenerConfig, PeerConfig, render_config
from ..startup.keystore import KeyStore, write_atomic
from .common import add_passphrase_arg, console, get_passphrase, print_json

CONFIG_FILE = "gateway.toml"
#: argon2id limits behind the hidden `--kdf-fast` flag (opslimit, memlimit): tests only, never real keys.
_FAST_KDF = (1, 8 * 1024)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create an identity: keys, self-signed TLS certificate, config")
    p.add_argument("--identity", required=True, help="this administration's identity, e.g. US-CBP")
    p.add_argument("--dir", required=True, type=Path, help="gateway home directory to create")
    p.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="HOST",
        help="DNS name or IP address the peer reaches us at (repeatable; default 127.0.0.1 and localhost)",
    )
    p.add_argument("--local-port", type=int, default=8080, help="port of the local API (default 8080)")
    p.add_argument("--peer-port", type=int, default=8443, help="port of the peer API (default 8443)")
    p.add_argument(
        "--valid-days",
        "--validity-days",
        dest="validity_days",
        type=int,
        default=730,
        help="key and certificate validity in days (default 730; as `keys renew --valid-days`)",
    )
    p.add_argument("--peer-identity", default="", help="the peer administration's identity, if known")
    p.add_argument("--peer-url", default="", help="base URL of the peer's peer API, if known")
    add_passphrase_arg(p)
    # Test-only: argon2id at its minimum cost so test suites stay fast. Hidden from --help.
    p.add_argument("--json", action="store_true", help="print what was created as JSON")
    p.add_argument("--kdf-fast", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _endpoint(host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def run(args: argparse.Namespace) -> int:
    identity: str = args.identity
    home: Path = args.dir
    hosts: list[str] = args.hosts or ["127.0.0.1", "localhost"]
    if not is_valid_identity(identity):
        raise ConfigError("identity must be 1-64 of A-Z a-z 0-9 . _ - (e.g. US-CBP)", field="identity")
    if args.peer_identity and (args.peer_identity == identity or not is_valid_identity(args.peer_identity)):
        raise ConfigError("peer identity must be a valid identity other than our own", field="peer-identity")
    for name in ("local_port", "peer_port"):
        if not 0 < getattr(args, name) < 65536:
            raise ConfigError(f"--{name.replace('_', '-')} must be 1..65535", field=name)
    if args.validity_days < 1:
        raise ConfigError("--valid-days must be at least 1", field="valid-days")

    config_path = home / CONFIG_FILE
    store = KeyStore(home / "keys", home / "tls")
    if config_path.exists() or store.exists():
        raise Conflict(f"{home} already holds a gateway; refusing to overwrite it", code="init.exists")

    passphrase = get_passphrase(args, confirm=True)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("keys", "tls", "data"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)
    opslimit, memlimit = _FAST_KDF if args.kdf_fast else (DEFAULT_OPSLIMIT, DEFAULT_MEMLIMIT)
    ident = store.create(
        identity,
        passphrase,
        hosts=hosts,
        now=dt.datetime.now(dt.UTC),
        validity_days=args.validity_days,
        endpoint=_endpoint(hosts[0], args.peer_port),
        opslimit=opslimit,
        memlimit=memlimit,
    )
    peer_bundle = f"peers/{args.peer_identity}.bundle.json" if args.peer_identity else ""
    config = Config(
        identity=identity,
        local_api=ListenerConfig(port=args.local_port),
        peer_api=ListenerConfig(port=args.peer_port),
        peer=PeerConfig(identity=args.peer_identity, url=args.peer_url, bundle=peer_bundle),
    )
    write_atomic(config_path, render_config(config).encode("utf-8"), 0o600)

    if getattr(args, "json", False):
        print_json(
            {
                "identity": identity,
                "home": str(home),
                "config": str(config_path),
                "keys": [{"use": r.use, "alg": r.alg, "kid": r.kid} for r in ident.bundle.bundle.keys],
                "tls_certificate": str(store.cert_path),
                "fingerprint": ident.bundle.fingerprint(),
            }
        )
        return 0
    out = console()
    out.print(f"[bold green]Created {identity}[/] in {escape(str(home))}")
    for rec in ident.bundle.bundle.keys:
        out.print(f"  {rec.use:<10} {rec.alg:<16} {rec.kid}")
    out.print(f"  tls        ecdsa-p256       {escape(str(store.cert_path))} (pinned by the peer via the bundle)")
    out.print(
        f"\nBundle fingerprint (read it to the peer over a separate channel):\n  [bold]{ident.bundle.fingerprint()}[/]"
    )
    cfg = escape(f"--config {config_path}")
    missing = [k for k, v in (("identity", args.peer_identity), ("url", args.peer_url)) if not v]
    where = escape(str(config_path))
    peer_step = (
        f"in {where}, section \\[peer], set {' and '.join(missing)}: the peer's identity (e.g. CN-GACC) "
        "and the https:// URL of its peer API"
        if missing
        else f"in {where}, section \\[peer], check the peer's identity and the URL of its peer API"
    )
    out.print(
        "\nNext steps:\n"
        f"  1. customs-gateway keys export {cfg} --out {identity}.bundle.json   (send it to the peer)\n"
        f"  2. customs-gateway keys import-peer {cfg} PEER.bundle.json   (compare the fingerprint first)\n"
        f"  3. {peer_step}\n"
        f"  4. customs-gateway tokens issue {cfg} --role agency   (and admin, auditor)\n"
        f"  5. customs-gateway serve {cfg}"
    )
    if args.kdf_fast:
        out.print("[bold red]WARNING: --kdf-fast keys are weakly protected; test use only.[/]")
    return 0
