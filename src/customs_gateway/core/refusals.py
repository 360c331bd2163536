"""The refusal policy: one table saying, for each stable refusal code, whether trying again can help.

A receiver signs every refusal with `retryable` from here (`GatewayError.retryable` reads it too);
a sender retries a refused message only when the signed refusal says so. Codes not listed are
permanent: sending the same document again would be refused the same way. The table is also the
list of refusal codes in docs/wire-format.md (a test keeps the two equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Policy:
    retryable: bool
    meaning: str


#: Stable codes a receiver may sign in a refusal (or a gateway answer with), by family.
REFUSALS: Final[dict[str, Policy]] = {
    # -- transient: a later attempt, re-signed, can succeed --------------------------------------
    "replay.skew": Policy(True, "sent_at is outside the receiver's skew window (clocks differ or the attempt is old)"),
    "key.unknown": Policy(True, "the key named is not known yet (its announcement may still be on its way)"),
    "key.not_yet_valid": Policy(True, "the key is not valid yet at the time it was used"),
    "suite.mismatch": Policy(True, "the encryption key named is of another suite (a bundle change is on its way)"),
    "store.unavailable": Policy(True, "the receiver could not commit; nothing was written"),
    "rate.limited": Policy(True, "too many requests; wait Retry-After"),
    "ack.not_yet_delivered": Policy(True, "an ack for a message whose receipt is still on its way back"),
    "file.incomplete": Policy(True, "a file the document names is not all held yet: send the rest, then the envelope"),
    # -- permanent: the same document would be refused again -------------------------------------
    "replay.conflict": Policy(False, "the message id was already received with another document"),
    "replay.seq_reused": Policy(False, "a sequence number already received with another message id (a restored peer)"),
    "signature.invalid": Policy(False, "a signature does not verify"),
    "binding.mismatch": Policy(False, "header and signed document disagree"),
    "binding.sender": Policy(False, "the document's sender is not the envelope's"),
    "binding.recipient": Policy(False, "the document is not addressed to this receiver"),
    "binding.created_at": Policy(False, "the document's created_at is not the header's"),
    "decrypt.failed": Policy(False, "the ciphertext does not open under the receiver's key"),
    "decode.malformed": Policy(False, "the envelope or document is not well-formed"),
    "decode.json": Policy(False, "not JSON"),
    "decode.version": Policy(False, "an unknown format version"),
    "decode.timestamp": Policy(False, "a time is not RFC 3339 UTC with milliseconds"),
    "key.revoked": Policy(False, "the key was revoked before it was used"),
    "key.expired": Policy(False, "the key had expired when it was used"),
    "key.wrong_use": Policy(False, "the key is not for this use"),
    "key.malformed": Policy(False, "the key bytes are not a key"),
    "key.kid_mismatch": Policy(False, "a key id does not match its key"),
    "key.announcement_identity": Policy(False, "an announced bundle is for another identity"),
    "key.announcement_stale": Policy(False, "an announced bundle is not newer than the one held"),
    "key.announcement_untrusted": Policy(False, "an announced bundle is not signed by a key the receiver trusts"),
    "key.announcement_possession": Policy(False, "a new key (or TLS certificate) did not prove possession"),
    "key.announcement_history": Policy(False, "an announced bundle rewrites key history"),
    "key.announcement_tls": Policy(False, "an announced TLS certificate change breaks the overlap rules"),
    "suite.unsupported": Policy(False, "an encryption suite the receiver does not support"),
    "suite.none_shared": Policy(False, "no encryption suite both sides support"),
    "schema.invalid": Policy(False, "the body breaks its type's schema"),
    "schema.required": Policy(False, "a required field is missing"),
    "schema.unknown_field": Policy(False, "a field the schema does not know"),
    "schema.type_unknown": Policy(False, "an unknown message type"),
    "schema.date_future": Policy(False, "a date of an event that has not happened yet"),
    "schema.reference": Policy(False, "a reference to a message the receiver does not know"),
    "schema.duplicate_key": Policy(False, "a JSON object with a key twice"),
    "handling.missing": Policy(False, "a business document without handling terms"),
    "handling.agreement": Policy(False, "the handling terms name another agreement than the profile's"),
    "handling.purpose": Policy(False, "a purpose the agreement profile does not list"),
    "handling.confidentiality": Policy(
        False, "an unknown confidentiality level, or no reason where the level requires one"
    ),
    "handling.onward_transfer": Policy(False, "an onward_transfer value the profile does not allow for the type"),
    "handling.evidentiary_use": Policy(False, "an evidentiary_use value the profile does not allow for the type"),
    "handling.retention": Policy(False, "retain_until is not after today or beyond the profile's maximum for the type"),
    "ack.unknown_message": Policy(False, "an ack for a message the receiver never sent"),
    "ack.wrong_state": Policy(False, "an ack for a message already acknowledged"),
    "ack.digest_mismatch": Policy(False, "an ack naming another document than the one sent"),
    "file.auth_failed": Policy(
        False, "a file chunk does not authenticate (altered, moved, dropped, repeated, or the wrong key)"
    ),
    "file.truncated": Policy(False, "a file ends before its final chunk"),
    "file.trailing_data": Policy(False, "a file has data after its final chunk"),
    "file.size_mismatch": Policy(
        False, "a file's size is not the one its document names (or no file has that ciphertext size)"
    ),
    "file.digest_mismatch": Policy(False, "a file's SHA-256 is not the one its document names"),
    "file.key_invalid": Policy(False, "a file key is not 32 bytes"),
}


def is_retryable(code: str) -> bool:
    """Whether a refusal with `code` may be tried again (unknown codes: no)."""
    policy = REFUSALS.get(code)
    return policy is not None and policy.retryable
