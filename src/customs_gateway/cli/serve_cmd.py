"""`customs-gateway serve`: run one gateway until SIGINT/SIGTERM, then stop cleanly."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

import structlog

from ..core.errors import ConfigError
from ..service.pair import example_dir
from ..service.server import GatewayServer, load_identity
from ..startup.config import Config, load_config
from ..startup.keystore import KeyStore
from ..startup.logs import configure_logging
from .common import add_config_arg, get_passphrase

log = structlog.get_logger("customs_gateway.serve")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gateway (local API, peer API, delivery worker)")
    add_config_arg(p)
    p.add_argument("--passphrase-file", help="file holding the key passphrase (else env or prompt)")
    p.add_argument(
        "--accept-clock",
        action="store_true",
        help="start even though this host's clock is behind the gateway's own audit log (logged)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.log_format, config.log_level)
    check_private_files(config, args.passphrase_file)
    # Held while serving: `keys passphrase` refuses to re-encrypt keys a running gateway holds.
    lock = KeyStore(config.path(config.keys_dir), config.path(config.tls_dir)).hold_serve_lock()
    try:
        return _run(args, config)
    finally:
        os.close(lock)


def _run(args: argparse.Namespace, config: Config) -> int:
    passphrase = get_passphrase(args)
    identity = load_identity(config, passphrase)
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        uvloop.install()
    except ImportError:
        pass
    server = GatewayServer(config, identity, passphrase=passphrase, accept_clock=args.accept_clock)
    asyncio.run(_serve(server))
    return 0


def check_private_files(config: Config, passphrase_file: str | None) -> None:
    """Private key files readable by group or others: refused, except for the example identities
    (a git checkout leaves `keys-example/` at 0644), which are only warned about; a readable
    passphrase file is warned about. Raises ConfigError naming the files and the fix."""
    keystore = KeyStore(config.path(config.keys_dir), config.path(config.tls_dir))
    exposed = keystore.permission_problems()
    if passphrase_file and Path(passphrase_file).exists() and Path(passphrase_file).stat().st_mode & 0o077:
        log.warning("keys.passphrase_file_readable", path=passphrase_file, fix=f"chmod 600 {passphrase_file}")
    if not exposed:
        return
    names = ", ".join(str(p) for p in exposed)
    if _is_example_identity(keystore):
        log.warning("keys.example_files_readable", files=names, note="example identity: never use it in production")
        return
    raise ConfigError(
        f"private key files readable by group or others: {names}; run chmod 600 on them",
        field="keys_dir",
        code="config.key_permissions",
    )


def _is_example_identity(keystore: KeyStore) -> bool:
    try:
        ours = keystore.bundle_path.read_bytes()
        examples = example_dir()
    except (OSError, FileNotFoundError):
        return False
    return any((d / "bundle.json").is_file() and (d / "bundle.json").read_bytes() == ours for d in examples.iterdir())


async def _serve(server: GatewayServer) -> None:
    stop = asyncio.Event()
    reason: list[str] = []
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        reason.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await server.start()
    try:
        await stop.wait()
    finally:
        why = reason[0] if reason else "error"
        log.info("gateway.stopping", reason=why)
        await server.stop()
        log.info("gateway.stopped", reason=why)
