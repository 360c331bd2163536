"""Two gateways on loopback from `keys-example/`: the layout the demo, tests and benchmark share.

`prepare_pair` lays out two gateway homes (keys, TLS, config, each other's imported bundle) in a
directory; `LocalPair` starts both in one event loop with real TLS and real SQLite files.
"""

from __future__ import annotations

import random
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..core.clock import Clock, IdSource
from ..startup.agreement import example_dir
from ..startup.config import Config, ListenerConfig, PeerConfig, load_config, render_config
from ..startup.keystore import Identity, import_peer_bundle
from .server import GatewayServer, load_identity

EXAMPLE_PASSPHRASE = b"example-only-not-secret"
IDENTITIES = ("US-CBP", "CN-GACC")
__all__ = ["EXAMPLE_PASSPHRASE", "IDENTITIES", "Home", "LocalPair", "example_dir", "free_port", "prepare_pair"]


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and outside the kernel's ephemeral range, so no outgoing
    connection (a client socket, a database connection) can take it before the gateway binds it
    — a port the kernel picks for bind(0) comes from that range and can. Never the same twice
    in one process."""
    lo, hi = _ephemeral_range()
    candidates = [p for p in range(20000, 32768) if not lo <= p <= hi] or list(range(20000, 32768))
    rng = random.Random()  # noqa: S311 - choosing a test port, not a secret
    for _ in range(200):
        port = rng.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # crowded machine: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Home:
    identity: str
    dir: Path
    config_path: Path
    local_port: int
    peer_port: int

    @property
    def local_url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"


def prepare_pair(
    root: Path,
    *,
    source: Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Home]:
    """Lay out both gateway homes under `root`; `overrides` maps section -> {key: value} for both."""
    src = source or example_dir()
    ports = {name: (free_port(), free_port()) for name in IDENTITIES}
    homes: dict[str, Home] = {}
    for name in IDENTITIES:
        other = IDENTITIES[1] if name == IDENTITIES[0] else IDENTITIES[0]
        home = root / name
        if home.exists():
            shutil.rmtree(home)
        home.mkdir(parents=True)
        shutil.copytree(src / name / "keys", home / "keys")
        shutil.copytree(src / name / "tls", home / "tls")
        (home / "data").mkdir(mode=0o700)
        peer_bundle = f"peers/{other}.bundle.json"
        import_peer_bundle((src / other / "bundle.json").read_bytes(), home / peer_bundle)
        cfg = Config(
            identity=name,
            log_format="json",
            local_api=ListenerConfig("127.0.0.1", ports[name][0]),
            peer_api=ListenerConfig("127.0.0.1", ports[name][1]),
            peer=PeerConfig(identity=other, url=f"https://127.0.0.1:{ports[other][1]}", bundle=peer_bundle),
        )
        for section, values in (overrides or {}).items():
            cfg = msgspec.structs.replace(cfg, **{section: msgspec.structs.replace(getattr(cfg, section), **values)})
        path = home / "gateway.toml"
        path.write_text(render_config(cfg), encoding="utf-8")
        homes[name] = Home(name, home, path, *ports[name])
    return homes


class LocalPair:
    """Both gateways running in this event loop."""

    def __init__(self, homes: dict[str, Home], passphrase: bytes = EXAMPLE_PASSPHRASE) -> None:
        self.homes = homes
        self.passphrase = passphrase
        self.configs: dict[str, Config] = {n: load_config(h.config_path, env={}) for n, h in homes.items()}
        self._identities: dict[str, Identity] = {}
        self.servers: dict[str, GatewayServer] = {}

    def identity(self, name: str) -> Identity:
        if name not in self._identities:
            self._identities[name] = load_identity(self.configs[name], self.passphrase)
        return self._identities[name]

    async def start(self, name: str, *, clock: Clock | None = None, ids: IdSource | None = None) -> GatewayServer:
        server = GatewayServer(
            self.configs[name], self.identity(name), clock=clock, ids=ids, passphrase=self.passphrase
        )
        await server.start()
        self.servers[name] = server
        return server

    async def stop(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server is not None:
            await server.stop()

    async def start_all(self, **kw: Any) -> None:
        for name in self.homes:
            await self.start(name, **kw)

    async def stop_all(self) -> None:
        for name in list(self.servers):
            await self.stop(name)
