"""The renewal drill (issue 14, DESIGN §11): three simulated years on one moved clock.

Two gateways start with keys and TLS certificates valid 400 days. Every 45 simulated days the
drill does what an operator following docs/operations.md would: run the gateways' upkeep, renew
each kind whose end is less than 120 days away (one at a time, as the gateway requires), exchange
traffic both ways and cosign both logs. Without renewals the link would stop at day 400; with them
it runs to day 1,100: nothing is lost or duplicated, every key kind and the TLS certificate is
renewed at least twice on each side, and both logs, spanning all of it, verify offline from the
fingerprints exchanged on day 0.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

from customs_gateway.core.audit_bundle import verify_bundle
from customs_gateway.core.clock import JumpClock
from customs_gateway.core.keyfile import DEFAULT_MEMLIMIT
from customs_gateway.service.pair import EXAMPLE_PASSPHRASE, IDENTITIES, prepare_pair
from customs_gateway.startup.keystore import KeyStore

from .conftest import CN, US, Pair, running_pair, sample
from .test_audit_export import _checkpoint, _export
from .test_key_lifecycle import _delivered, _wait
from .test_renewal import _renew

VALID_DAYS = 400
STEP = dt.timedelta(days=45)
RENEW_WITHIN_DAYS = 120
DRILL_DAYS = 1100
KINDS = ("signing", "encryption", "witness", "tls")


def _fresh_identities(root: Path, now: dt.datetime) -> tuple[Path, dict[str, str]]:
    """Both identities made today, valid VALID_DAYS, laid out as prepare_pair reads them."""
    src = root / "identities"
    fingerprints = {}
    for name in IDENTITIES:
        store = KeyStore(src / name / "keys", src / name / "tls")
        ident = store.create(
            name,
            EXAMPLE_PASSPHRASE,
            hosts=["127.0.0.1"],
            now=now,
            validity_days=VALID_DAYS,
            opslimit=1,
            memlimit=DEFAULT_MEMLIMIT // 8,
        )
        (src / name / "bundle.json").write_bytes(ident.bundle.to_bytes())
        fingerprints[name] = ident.bundle.fingerprint()
    return src, fingerprints


async def _exchange(pair: Pair, day: int, sent: dict[str, list[str]]) -> None:
    ids = {}
    for side in (US, CN):
        ids[side] = []
        for i in range(3):
            body = sample("seizure-share")
            body["case_reference"] = f"DRILL-{side}-{day:04d}-{i}"
            status, r = await pair.apis[side].submit("seizure-share", body=body)
            assert status == 202, (day, r)
            ids[side].append(r["id"])
    for side, mids in ids.items():
        for mid in mids:
            m = await pair.apis[side].wait_status(mid, {"delivered", "refused", "expired"}, timeout=30)
            assert m["status"] == "delivered", (day, m)
        sent[side].extend(mids)


async def test_three_years_of_renewals_keep_the_link_and_the_evidence(tmp_path: Path) -> None:
    clock = JumpClock()
    src, anchors = _fresh_identities(tmp_path, clock.now())
    homes = prepare_pair(
        tmp_path / "homes",
        source=src,
        overrides={"delivery": {"retry_base_seconds": 0.05, "retry_cap_seconds": 0.5}},
    )
    sent: dict[str, list[str]] = {US: [], CN: []}
    renewed: Counter[tuple[str, str]] = Counter()
    async with running_pair(homes) as pair:
        await pair.lp.stop_all()
        pair.lp._identities.clear()
        await pair.lp.start_all(clock=clock)
        start = clock.now()
        day = 0
        while day <= DRILL_DAYS:
            for side in (US, CN):
                await pair.lp.servers[side].maintain_once()
            for side in (US, CN):
                gw = pair.gw(side)
                for kind in KINDS:
                    left = (gw.identity.expiry()[kind] - clock.now()).total_seconds() / 86400
                    assert left > 0, f"day {day}: {side}'s {kind} expired before it was renewed"
                    if left < RENEW_WITHIN_DAYS:
                        res = await _renew(pair, side, kind, days=VALID_DAYS)
                        await _delivered(pair, side, res["announcement_id"])
                        await _wait(lambda gw=gw: not gw.identity.pending)
                        renewed[side, kind] += 1
            await _exchange(pair, day, sent)
            for side in (US, CN):
                await _checkpoint(pair, side)
            clock.jump(STEP)
            day = (clock.now() - start).days

        # Every kind renewed on each side, more than once (400-day keys over 1,100 days).
        assert all(renewed[side, kind] >= 2 for side in (US, CN) for kind in KINDS), renewed
        for side in (US, CN):
            gw = pair.gw(side)
            assert min(gw.identity.expiry().values()) > clock.now()
            # The keys of day 0 are long retired: nothing still in use dates from then.
            assert all(r.not_before > start for r in gw.identity.bundle.bundle.keys if r.state == "active")
        # Zero lost, zero duplicated, in order: each inbox holds exactly what the other side sent.
        for side, other in ((US, CN), (CN, US)):
            got: list[str] = []
            after = 0
            while True:
                _, page, _ = await pair.apis[other].call("GET", f"/v1/inbox?limit=500&after={after}")
                got += [m["id"] for m in page["messages"] if m["from"] == side]
                if not page["messages"] or page.get("next_cursor") in (None, after):
                    break
                after = page["next_cursor"]
            assert got == sent[side]
        # Both logs, spanning every renewal, verify offline from the day-0 fingerprints.
        for side in (US, CN):
            path = tmp_path / f"{side}.audit.jsonl"
            await _export(pair, side, path)
            with path.open("rb") as f:
                report = verify_bundle(f, require_cosigned=True, trust=anchors)
            assert report.log == side and report.cosigned_checkpoints == report.checkpoints
            assert report.kinds["key_renewed"] == sum(n for (s, _), n in renewed.items() if s == side)
            # Delivered: the business messages and every announcement (renewals; retirements
            # after the overlap, logged as key_rotated), each once.
            announcements = report.kinds["key_renewed"] + report.kinds.get("key_rotated", 0)
            assert report.kinds["delivered"] == len(sent[side]) + announcements, report.kinds
