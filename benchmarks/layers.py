"""What each layer of a deployment adds to the gateway's logic: the `cpu_floor` row of
`customs-gateway bench` (both gateways in one process, messages in by `submit_batch`, out by the
real delivery worker in full batches), then with the crypto worker processes, then with the
peer API over mutual TLS as well, as CPU per message of the whole process tree.

    python benchmarks/layers.py [--messages 4000] [--rounds 2] [--crypto-seconds 3]

Each configuration runs `--rounds` times, alternated, each followed by a reading of the crypto
ceiling in the same process. What is still left out compared with the `cpu_multiple` row: the
local API's HTTP (one request a message there, one per 100 here), the smaller delivery batches
and pipelining of a live pair, and two cores shared by the load generator and both gateways'
threads and processes. Compare the lines of one run: this machine's speed drifts between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from customs_gateway.bench.floor import Layers, logic_floor

CONFIGS = (Layers(), Layers(processes=2), Layers(processes=2, https=True))


async def main(messages: int, rounds: int, crypto_seconds: float) -> None:
    results: dict[Layers, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="layers-") as tmp:
        for r in range(rounds):
            for i, layers in enumerate(CONFIGS):
                res = await logic_floor(Path(tmp) / f"{r}-{i}", messages, crypto_seconds, layers=layers)
                results[layers].append(res)
                print(
                    f"round {r + 1}: {layers.describe():<60} {res['cpu_us_per_message']:>7,.0f} us a message"
                    f" (submit {res['sender_submit_us']:,.0f}, delivery {res['delivery_both_sides_us']:,.0f})"
                    f" / crypto {res['crypto_us_per_message']:,.0f} = {res['multiple']:.2f}x",
                    flush=True,
                )
    print()
    base = None
    for layers in CONFIGS:
        runs = results[layers]
        us = statistics.median(x["cpu_us_per_message"] for x in runs)
        mult = statistics.median(x["multiple"] for x in runs)
        step = "" if base is None else f"  (+{us - base:,.0f} us over the line above)"
        print(f"{layers.describe():<60} median {us:>7,.0f} us a message, {mult:.2f}x crypto{step}")
        base = us


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--crypto-seconds", type=float, default=3.0)
    args = p.parse_args()
    if not 100 <= args.messages <= 1_000_000 or not 1 <= args.rounds <= 20 or not 0.5 <= args.crypto_seconds <= 60:
        sys.exit("layers: --messages 100..1,000,000, --rounds 1..20, --crypto-seconds 0.5..60")
    asyncio.run(main(args.messages, args.rounds, args.crypto_seconds))
