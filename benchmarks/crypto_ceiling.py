"""The cryptographic ceiling: all crypto of one message end to end, in a tight loop, messages/s.

One message = document sign, HPKE seal, envelope sign, envelope verify, HPKE open, document
verify, receipt sign, receipt verify — what every message costs the two gateways together,
with no I/O at all. The gateway's throughput is judged against this figure.

    python benchmarks/crypto_ceiling.py [--seconds 3] [--suite hybrid|x25519] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from customs_gateway.core.bundle import KeyBundle, KeyRecord, PeerKeys
from customs_gateway.core.envelope import Document, build_envelope, open_envelope
from customs_gateway.core.keys import (
    ALG_MLKEM768_X25519,
    ALG_X25519,
    SUITE_HYBRID,
    SUITE_X25519,
    DecryptionKey,
    SigningKey,
)
from customs_gateway.core.receipt import make_receipt, verify_receipt

NOW = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.timezone.utc)
FAR = NOW + dt.timedelta(days=365)


def _record(kid: str, use: str, alg: str, public: bytes) -> KeyRecord:
    return KeyRecord(kid, use, alg, public, NOW - dt.timedelta(days=1), FAR)


def measure(seconds: float, alg: str) -> dict[str, float]:
    a_sig = SigningKey(bytes(range(32)))
    b_sig = SigningKey(bytes(range(1, 33)))
    b_enc = DecryptionKey.generate(alg)
    suite = SUITE_HYBRID if alg == ALG_MLKEM768_X25519 else SUITE_X25519
    peer_a = PeerKeys(
        KeyBundle("US-CBP", NOW, (_record(a_sig.kid, "signing", "ed25519", a_sig.public_raw),), (suite,), "")
    )
    peer_b = PeerKeys(
        KeyBundle(
            "CN-GACC",
            NOW,
            (
                _record(b_sig.kid, "signing", "ed25519", b_sig.public_raw),
                _record(b_enc.kid, "encryption", alg, b_enc.public.raw),
            ),
            (suite,),
            "",
        )
    )
    body = json.loads((Path(__file__).resolve().parents[1] / "keys-example/messages/seizure-share.json").read_text())
    enc_key = peer_b.encryption_key(NOW)
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            doc = Document(f"0190a1b2-0000-7000-8000-{n:012d}", "US-CBP", "CN-GACC", "seizure-share", NOW, body)
            env, signed, _ = build_envelope(
                doc, seq=n + 1, sent_at=NOW, attempt=1, signing_key=a_sig, recipient_key=enc_key
            )
            opened = open_envelope(
                env, me="CN-GACC", peer=peer_a, decryption_key=lambda _k: b_enc, now=NOW, skew_seconds=300
            )
            rc = make_receipt(
                message_id=doc.id,
                sender="US-CBP",
                receiver="CN-GACC",
                document_sha256=opened.signed_document.digest,
                received_at=NOW,
                key=b_sig,
            )
            verify_receipt(
                rc,
                message_id=doc.id,
                sender="US-CBP",
                receiver="CN-GACC",
                document_sha256=signed.digest,
                key_for=peer_b.verify_key,
            )
            n += 1
    elapsed = time.perf_counter() - start
    return {"messages": n, "seconds": elapsed, "messages_per_second": n / elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--suite", choices=("hybrid", "x25519"), default="hybrid")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    alg = ALG_MLKEM768_X25519 if args.suite == "hybrid" else ALG_X25519
    res = measure(args.seconds, alg)
    res["suite"] = args.suite  # type: ignore[assignment]
    if args.json:
        print(json.dumps(res))
    else:
        rate, n, secs = res["messages_per_second"], res["messages"], res["seconds"]
        print(f"crypto ceiling ({args.suite}): {rate:.0f} messages/s ({n:.0f} in {secs:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
