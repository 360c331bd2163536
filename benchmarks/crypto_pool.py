"""What a process hop costs: the crypto batches through `ProcessPoolExecutor` and through the
gateway's `DirectProcessPool`, CPU of the parent and of the workers (from /proc) per envelope.

    python benchmarks/crypto_pool.py [--batch 20] [--maps 100]

Two workers each way, the batch split in two chunks as `CryptoPool.map` splits it. Compare the
two lines of one run: this machine's speed drifts between runs (docs/performance.md, session 11).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.gateway.conftest import CN, US
from tests.gateway.test_crypto_workers import NOW, _envelopes, _items, _open_keys, _seal_keys

from customs_gateway.service.crypto_pool import MainlessProcessPool, _main_module_hidden
from customs_gateway.service.crypto_workers import build_batch, open_batch, warm
from customs_gateway.service.pair import LocalPair, prepare_pair
from customs_gateway.service.procpool import DirectProcessPool

Map = Callable[[Callable[..., list[Any]], Any, Sequence[Any]], Awaitable[list[Any]]]


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def main(batch: int, maps: int) -> None:
    pair = LocalPair(prepare_pair(Path(tempfile.mkdtemp())))
    us, cn = pair.identity(US), pair.identity(CN)
    items = _items(us, batch)
    seal, opening = _seal_keys(us, cn), _open_keys(cn, us)
    envelopes = _envelopes(build_batch(seal, NOW, items))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["customs_gateway.service.crypto_workers"])
    loop = asyncio.get_running_loop()
    executor = MainlessProcessPool(max_workers=2, mp_context=ctx)
    await asyncio.gather(*(loop.run_in_executor(executor, warm) for _ in range(2)))
    direct = DirectProcessPool(2, ctx, spawning=_main_module_hidden)
    await direct.start()
    half = -(-batch // 2)

    async def via_executor(fn: Callable[..., list[Any]], keys: Any, arg: Sequence[Any]) -> list[Any]:
        parts = await asyncio.gather(
            *(loop.run_in_executor(executor, fn, keys, NOW, c) for c in (arg[:half], arg[half:]))
        )
        return [r for p in parts for r in p]

    async def via_direct(fn: Callable[..., list[Any]], keys: Any, arg: Sequence[Any]) -> list[Any]:
        parts = await asyncio.gather(*(direct.run(fn, keys, NOW, c) for c in (arg[:half], arg[half:])))
        return [r for p in parts for r in p]

    pools: list[tuple[str, Map, list[int]]] = [
        ("executor", via_executor, list(executor._processes)),  # type: ignore[attr-defined]
        ("direct", via_direct, direct.pids),
    ]
    try:
        for name, run, pids in pools:
            for fn, keys, arg in ((build_batch, seal, items), (open_batch, opening, envelopes)):
                await run(fn, keys, arg)
                c0, w0, t0 = _cpu_self(), _cpu_of(pids), time.perf_counter()
                for _ in range(maps):
                    await run(fn, keys, arg)
                c1, w1, t1 = _cpu_self(), _cpu_of(pids), time.perf_counter()
                n = maps * batch
                print(
                    f"{name:8} {fn.__name__:11} parent {1e6 * (c1 - c0) / n:4.0f} µs/envelope, workers "
                    f"{1e6 * (w1 - w0) / n:4.0f}, total {1e6 * (c1 - c0 + w1 - w0) / n:4.0f}; "
                    f"{1e3 * (t1 - t0) / maps:.2f} ms a map"
                )
    finally:
        executor.shutdown()
        direct.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--maps", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.batch, args.maps))
