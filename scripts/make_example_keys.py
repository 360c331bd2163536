"""Generate keys-example/: two ready identities (US-CBP, CN-GACC) for the demo and the tests.

EXAMPLE ONLY. The passphrase is public (`example-only-not-secret`) and the keys are derived from
a fixed seed, so anyone can recreate them: they protect nothing and must never be used for real
traffic. Determinism is on purpose: re-running this script reproduces the same bytes, so the
committed files can be checked against it.

    .venv/bin/python scripts/make_example_keys.py [--force]

Writes keys-example/<IDENTITY>/{keys/, tls/, bundle.json} and keys-example/README.md; never
touches keys-example/messages/. Keys and the TLS certificate are valid from 2026-01-01 to
2036-01-01.

KDF cost: with the default argon2id cost (3 passes over 64 MiB, ~0.12 s per key file, five files
per identity) loading one identity measured 0.28 s on an idle 2-core machine but 0.5-1.0 s on a
busy one or a single core, above the 0.5 s budget for the demo and the tests that start gateways.
The example keys therefore use 2 passes over 16 MiB (~0.02 s per file). This costs no security:
their passphrase is published anyway. Keys made by `customs-gateway init` use the defaults.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import shutil
import sys
import time
from pathlib import Path

from customs_gateway.startup.keystore import KeyStore

ROOT = Path(__file__).resolve().parents[1] / "keys-example"
PASSPHRASE = b"example-only-not-secret"
IDENTITIES = ("US-CBP", "CN-GACC")
HOSTS = ["127.0.0.1", "localhost"]
NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2036, 1, 1, tzinfo=dt.UTC)
#: Cheaper than keyfile.DEFAULT_* on purpose (see the module docstring); example keys only.
EXAMPLE_OPSLIMIT = 2
EXAMPLE_MEMLIMIT = 16 * 1024 * 1024


class SeededBytes:
    """SHA-256 in counter mode over a public label: reproducible, and therefore not secret."""

    def __init__(self, label: str) -> None:
        self._key = hashlib.sha256(b"customs-gateway example keys v1\n" + label.encode()).digest()
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._key + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        return out[:n]


README = """\
# keys-example/ — EXAMPLE KEYS, NEVER USE IN PRODUCTION

> **WARNING: everything in this directory is public test material.** The passphrase is written
> below and the keys are derived from a fixed, published seed (`scripts/make_example_keys.py`),
> so anyone can decrypt them or regenerate them. Do not use them for real traffic, do not copy
> them into a production gateway, and do not reuse the passphrase. Run `customs-gateway init`
> for real identities.

Passphrase of every key file here: `example-only-not-secret`

    export CUSTOMS_GATEWAY_PASSPHRASE=example-only-not-secret

- `US-CBP/`, `CN-GACC/`: one identity each, laid out as `customs-gateway init` makes it:
  - `keys/<kid>.key`: private keys (signing, hybrid and X25519 encryption, witness) and the
    store key (`keys/store-….key`, the local secret the reference index and data at rest derive
    from), argon2id key files; `keys/bundle.json`: the identity's own signed key bundle;
  - `tls/cert.pem`: self-signed TLS certificate for 127.0.0.1 and localhost; `tls/key.key`: its
    ECDSA P-256 key in the same key-file format;
  - `bundle.json`: the exported public signed bundle, what the other side imports with
    `customs-gateway keys import-peer`.
- `messages/`: sample messages (maintained separately).
- `agreement-profile.toml`: an example agreement profile (DESIGN §12; maintained separately, an
  example, not legal advice): purposes, confidentiality levels, retention and defaults per type.

Keys and certificates are valid from 2026-01-01 to 2036-01-01.

The key files here use a cheaper argon2id cost (2 passes over 16 MiB) than real key files (3
passes over 64 MiB): with the default cost, loading one identity took 0.5-1.0 s on a busy or
single-core machine, too slow for the demo and for tests that start both gateways. Since the
passphrase is published, the KDF cost protects nothing here. `customs-gateway init` always uses
the default cost.

Git does not keep file modes (the `*.key` files are 0600 when generated, 0644 after a checkout).

Regenerate (byte-identical output): `.venv/bin/python scripts/make_example_keys.py --force`
"""


def make(identity: str, root: Path) -> str:
    home = root / identity
    store = KeyStore(home / "keys", home / "tls")
    created = store.create(
        identity,
        PASSPHRASE,
        hosts=HOSTS,
        now=NOT_BEFORE,
        validity_days=(NOT_AFTER - NOT_BEFORE).days,
        randbytes=SeededBytes(identity),
        opslimit=EXAMPLE_OPSLIMIT,
        memlimit=EXAMPLE_MEMLIMIT,
    )
    (home / "bundle.json").write_bytes(created.bundle.to_bytes())
    return created.bundle.fingerprint()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="replace the existing example identities")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root: Path = args.root
    for identity in IDENTITIES:
        if (root / identity).exists():
            if not args.force:
                print(f"{root / identity} exists; pass --force to regenerate", file=sys.stderr)
                return 1
            shutil.rmtree(root / identity)
    root.mkdir(parents=True, exist_ok=True)
    for identity in IDENTITIES:
        print(f"{identity}: bundle fingerprint {make(identity, root)}")
        start = time.monotonic()
        KeyStore(root / identity / "keys", root / identity / "tls").load(PASSPHRASE)
        print(f"{identity}: loads in {time.monotonic() - start:.2f} s")
    (root / "README.md").write_text(README, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
