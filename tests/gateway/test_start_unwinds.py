"""A gateway that cannot finish starting closes what it had opened, newest first (issue 15): a
peer port already taken must not leave the store, the crypto workers or the local listener open."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from customs_gateway.service.pair import LocalPair, prepare_pair
from customs_gateway.service.server import GatewayServer
from customs_gateway.store.sqlite import SQLiteStore

from .conftest import US


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def test_a_taken_peer_port_unwinds_everything_opened_before_it(tmp_path: Path) -> None:
    homes = prepare_pair(tmp_path)
    lp = LocalPair(homes)
    home = homes[US]
    server = GatewayServer(lp.configs[US], lp.identity(US), passphrase=lp.passphrase)
    store = server.gateway.store
    assert isinstance(store, SQLiteStore)
    order: list[str] = []
    store_close, crypto_close = store.close, server.gateway.close

    async def closing_store() -> None:
        order.append("store")
        await store_close()

    async def closing_crypto() -> None:
        order.append("crypto")
        await crypto_close()

    store.close = closing_store  # type: ignore[method-assign]
    server.gateway.close = closing_crypto  # type: ignore[method-assign]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", home.peer_port))
        taken.listen()
        with pytest.raises(OSError):
            await server.start()
    assert order == ["crypto", "store"]  # opened store first, crypto second: closed the other way round
    assert _can_bind(home.local_port), "the local listener opened before the failure is still bound"
    assert store._writer is None and store._rconn is None
    assert server.gateway.crypto._procs is None
    assert server.worker is None and server.checkpointer is None and server.evidence is None
    await server.stop()  # a second stop after a failed start is harmless
    assert order == ["crypto", "store"]

    # Nothing is left behind that would stop the next start, once the port is free.
    again = await lp.start(US)
    assert not _can_bind(home.local_port)
    await again.stop()
    assert _can_bind(home.local_port) and _can_bind(home.peer_port)
