"""The RabbitMQ reference: the gateway's payloads through a durable queue with confirms and acks.

Needs `pip install 'customs-gateway[bench]'` (aio-pika) and a broker, by default the local
RabbitMQ at amqp://guest:guest@127.0.0.1:5672/. No signing, no encryption: what durable
messaging alone costs on this machine.

    python benchmarks/rabbitmq_reference.py [--seconds 10] [--publishers 32] [--url URL] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from customs_gateway.bench.benchmark import Skipped, rabbitmq_reference, sample_body, submit_payload


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--publishers", type=int, default=32)
    ap.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    payload = submit_payload("CN-GACC", sample_body())
    try:
        res = asyncio.run(
            rabbitmq_reference(args.url, payload, publishers=args.publishers, warmup=2.0, window=args.seconds)
        )
    except Skipped as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 0
    if args.json:
        print(json.dumps(res))
    else:
        print(f"RabbitMQ reference: {res['messages_per_second']:.0f} messages/s ({res['payload_bytes']} B payloads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
