"""`customs-gateway serve`: run one gateway until SIGINT/SIGTERM, then stop cleanly."""

from __future__ import annotations

import argparse
import asyncio
import signal

from ..config import load_config
from ..logs import configure_logging
from ..server import GatewayServer, load_identity
from .common import add_config_arg, get_passphrase


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


async def _serve(server: GatewayServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop()
