"""Trust in an identity's keys over time, for offline verifiers: from one anchor bundle, along
the chain of bundle versions that each follow from the one before (DESIGN §10).

The anchor is the bundle whose fingerprint the auditor compared out of band (or, without one,
the lowest serial in the file, which the report prints to compare). Every later version must be
a continuation under exactly the rules a gateway applies to an announcement
(`rotation.check_update`): signed by a key the previous version trusts, new signing keys proving
possession, no history rewritten. A bundle that is merely self-signed proves nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from .audit_format import BundleError
from .bundle import KeyBundle, KeyRecord, SignedBundle
from .encoding import format_ts
from .errors import GatewayError, KeyStateError
from .keys import VerifyKey
from .rotation import check_update

_ALMOST_A_SECOND = dt.timedelta(microseconds=999_999)


def valid_in_second(rec: KeyRecord, second: dt.datetime) -> str | None:
    """`rec.valid_at` for a time known to the second (C2SP cosignature timestamps): the key may
    have become valid during that second, so `not_before` counts from the second's end."""
    problem = rec.valid_at(second)
    if problem == "key.not_yet_valid" and rec.valid_at(second + _ALMOST_A_SECOND) is None:
        return None
    return problem


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as `keys export` prints it (upper-case hex in groups of four), from any
    spacing or case the auditor typed."""
    h = "".join(text.split()).upper()
    return " ".join(h[i : i + 4] for i in range(0, len(h), 4))


@dataclass(frozen=True)
class TrustedKeys:
    """An identity's newest trusted bundle, reached from its anchor; keys valid only in their window."""

    identity: str
    bundle: KeyBundle
    anchor_serial: int
    anchor_fingerprint: str

    def records(self, use: str) -> list[KeyRecord]:
        return [r for r in self.bundle.keys if r.use == use]

    def verify_key(self, kid: str, at: dt.datetime, use: str = "signing") -> VerifyKey:
        """The key `kid` if it is a `use` key valid (in its window, not revoked) at `at`; raises KeyStateError."""
        return VerifyKey(self.record(kid, at, use).public)

    def record(self, kid: str, at: dt.datetime, use: str = "signing") -> KeyRecord:
        """The record of `kid` if it is a `use` key valid at `at`; raises KeyStateError."""
        rec = self.bundle.key(kid)
        if rec is None:
            raise KeyStateError(f"key {kid} is in none of {self.identity}'s trusted bundles", code="key.unknown")
        if rec.use != use:
            raise KeyStateError(f"key {kid} of {self.identity} is a {rec.use} key, not {use}", code="key.wrong_use")
        problem = rec.valid_at(at)
        if problem is not None:
            raise KeyStateError(
                f"key {kid} of {self.identity} is not valid at {format_ts(at)} ({problem})", code=problem
            )
        return rec


def trusted_keys(identity: str, versions: Iterable[tuple[int, SignedBundle]], anchor: str | None) -> TrustedKeys:
    """Chain `versions` ((line, signed bundle) as read from a file) from the anchor; raises
    BundleError naming the line of the first version that does not follow."""
    by_serial: dict[int, tuple[int, SignedBundle, KeyBundle]] = {}
    last_line = 0
    for line, signed in versions:
        last_line = max(last_line, line)
        try:
            bundle = signed.bundle
        except GatewayError as e:
            raise BundleError(
                f"key bundle of {identity} is unreadable: {e.detail}", code="audit.bundle", line=line
            ) from e
        if bundle.identity != identity:
            raise BundleError(f"bundle of {bundle.identity!r} filed as {identity!r}'s", code="audit.bundle", line=line)
        held = by_serial.get(bundle.serial)
        if held is not None and held[1].to_bytes() != signed.to_bytes():
            raise BundleError(
                f"two different bundles of {identity} with serial {bundle.serial} (the other on line {held[0]})",
                code="audit.bundle_chain",
                line=line,
            )
        by_serial.setdefault(bundle.serial, (line, signed, bundle))
    if not by_serial:
        raise BundleError(f"the file carries no key bundle of {identity}", code="audit.bundle", line=last_line)
    chain = [by_serial[s] for s in sorted(by_serial)]
    if anchor is not None:
        want = normalise_fingerprint(anchor)
        starts = [i for i, (_, signed, _) in enumerate(chain) if signed.fingerprint() == want]
        if not starts:
            raise BundleError(
                f"no bundle of {identity} has the trusted fingerprint {want}",
                code="audit.trust_anchor",
                line=chain[0][0],
            )
        chain = chain[starts[0] :]
    line, signed, current = chain[0]
    try:
        signed.verify_self_signed()
    except GatewayError as e:
        raise BundleError(
            f"anchor bundle of {identity} does not verify: {e.detail}", code="audit.bundle", line=line
        ) from e
    for line, signed, bundle in chain[1:]:
        try:
            current = check_update(current, signed, bundle.issued_at)
        except GatewayError as e:
            raise BundleError(
                f"bundle serial {bundle.serial} of {identity} does not follow from serial {current.serial}: {e.detail}",
                code="audit.bundle_chain",
                line=line,
            ) from e
    return TrustedKeys(identity, current, chain[0][2].serial, chain[0][1].fingerprint())
