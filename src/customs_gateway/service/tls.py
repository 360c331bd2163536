"""Mutual TLS with pinned self-signed certificates: making the certificate and the SSL contexts.

Each gateway presents one self-signed ECDSA P-256 certificate; the peer's certificates, imported
and renewed with its key bundle, are the only trust anchors of the peer-facing contexts (pinning
replaces names and CAs). OpenSSL's own clock check is off for the pinned certificates: the gateway
checks their validity against its own clock (`core.tlscert.pinned_fingerprints`), so a renewal and
an overlap behave the same under an injected clock as under the system one (decision 0008).
`PeerTLS` reloads both contexts when a certificate is renewed, without a restart.

The private key never touches the disk unencrypted: `ssl` only loads keys from paths, so we hand
it an anonymous in-memory file (`memfd_create`) holding the key encrypted under a throwaway
password.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Iterator
from typing import Final, Protocol

import aiohttp
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..core.errors import ConfigError
from ..core.tlscert import pinned_fingerprints

#: X509_V_FLAG_NO_CHECK_TIME: validity of the pinned certificates is checked by the gateway itself.
_NO_CHECK_TIME: Final = 0x200000
log = structlog.get_logger("customs_gateway.tls")


class _PeerCertSource(Protocol):
    def getpeercert(self, binary_form: bool = ...) -> object: ...


def _subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_self_signed(
    identity: str,
    hosts: list[str],
    now: dt.datetime,
    days: int,
    key: ec.EllipticCurvePrivateKey,
    *,
    serial: int | None = None,
) -> bytes:
    """A PEM self-signed end-entity certificate for `identity`, valid `days` from `now`.

    SAN lists every host (IP addresses as iPAddress, anything else as dNSName); the certificate is
    no CA and is good for both server and client authentication, so one cert serves both roles.
    """
    if not hosts:
        raise ConfigError("a TLS certificate needs at least one host name or address", field="hosts")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(_subject_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_fingerprint(pem: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex."""
    return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def peer_certificate_fingerprint(ssl_object: _PeerCertSource) -> str | None:
    """SHA-256 (hex) of the certificate the other end presented, or None if it presented none."""
    der = ssl_object.getpeercert(binary_form=True)
    if not isinstance(der, bytes) or not der:
        return None
    return hashlib.sha256(der).hexdigest()


def certificate_public_key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the certificate was issued for this private key (checked at load time)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


@contextlib.contextmanager
def _in_memory_file(data: bytes, name: str) -> Iterator[str]:
    """A path that reads back `data` and exists only while the block runs.

    Prefer an anonymous memory file (Linux `memfd_create`, read through /proc/self/fd); fall back
    to a 0600 temporary file that is removed as soon as the block ends.
    """
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create(name, getattr(os, "MFD_CLOEXEC", 0))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix=f".{name}-")  # mkstemp creates the file with mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _load_identity(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # What reaches the (memory) file is the key re-encrypted under a password that exists only
    # here, so even the temp-file fallback never holds the key in the clear.
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ConfigError("the TLS private key is not a PEM private key", field="tls") from e
    password = secrets.token_bytes(32)
    wrapped = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with _in_memory_file(cert_pem, "tls-cert") as cert_path, _in_memory_file(wrapped, "tls-key") as key_path:
        try:
            ctx.load_cert_chain(cert_path, key_path, password=password)
        except ssl.SSLError as e:
            raise ConfigError(f"TLS certificate and key cannot be loaded: {e.reason}", field="tls") from e


def _pin(ctx: ssl.SSLContext, peer_cert_pem: bytes) -> None:
    """Trust the pinned certificate(s) (`peer_cert_pem` may hold several PEM blocks)."""
    ctx.verify_mode = ssl.CERT_REQUIRED
    # The pinned certificate is a self-signed leaf: trust it as an anchor in its own right.
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | _NO_CHECK_TIME
    try:
        ctx.load_verify_locations(cadata=peer_cert_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError("the peer's TLS certificate is not a valid PEM certificate", field="peer.tls") from e


def server_context(cert_pem: bytes, key_pem: bytes, peer_cert_pem: bytes) -> ssl.SSLContext:
    """TLS 1.3 server context for the peer API: requires a client certificate equal to the pin."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    _load_identity(ctx, cert_pem, key_pem)
    _pin(ctx, peer_cert_pem)
    return ctx


def client_context(cert_pem: bytes, key_pem: bytes, peer_cert_pem: bytes) -> ssl.SSLContext:
    """TLS 1.3 client context for calling the peer: presents our certificate, trusts only the pin.

    Host names are not checked because the pin already names exactly one certificate.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    _load_identity(ctx, cert_pem, key_pem)
    _pin(ctx, peer_cert_pem)
    return ctx


def local_server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """TLS server context for the optional HTTPS local API: no client certificates (bearer tokens)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_NONE
    _load_identity(ctx, cert_pem, key_pem)
    return ctx


def cert_hosts(pem: bytes) -> list[str]:
    """The host names and addresses a certificate names (to renew it for the same hosts)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))]


OwnCert = Callable[[], tuple[bytes, bytes]]  # (certificate PEM, private key PEM) presented now
PeerPins = Callable[[], tuple[str, ...]]  # PEM certificates the peer may present now


class PeerTLS:
    """The peer link's contexts, kept equal to the bundles without a restart.

    A listening socket keeps the context it was opened with, so the server context is changed in
    place: a renewed certificate of ours is loaded into it (new handshakes present it) and a new
    peer certificate is added to its trust store. A pin whose overlap has ended may stay in that
    store, but the peer API checks every request against `pinned()` exactly. Client contexts are
    rebuilt whenever something changed, so they trust exactly the pins of the moment.
    """

    def __init__(self, own: OwnCert, pins: PeerPins, now: Callable[[], dt.datetime]) -> None:
        self._own, self._pins, self._now = own, pins, now
        self._state: tuple[bytes, frozenset[str]] | None = None
        self._anchors: set[str] = set()
        self.server: ssl.SSLContext | None = None
        self._client: ssl.SSLContext | None = None
        self.refresh()

    def pinned(self) -> frozenset[str]:
        """SHA-256 fingerprints of the peer certificates acceptable now."""
        return pinned_fingerprints(self._pins(), self._now())

    def client(self) -> ssl.SSLContext:
        """The client context for the next request (rebuilt first if a certificate changed)."""
        self.refresh()
        assert self._client is not None
        return self._client

    def refresh(self) -> bool:
        """Bring the contexts up to date; True if anything changed."""
        cert, key = self._own()
        now = self._now()
        pins = tuple(p for p in self._pins() if pinned_fingerprints((p,), now))
        state = (cert, frozenset(pins))
        if state == self._state:
            return False
        first = self._state is None
        joined = "".join(pins).encode("ascii")
        if not pins:
            # Every pin has lapsed: keep the last anchors (requests are refused by `pinned()`).
            joined = "".join(self._anchors).encode("ascii") or self._pins()[0].encode("ascii")
        if self.server is None:
            self.server = server_context(cert, key, joined)
        else:
            if self._state is not None and cert != self._state[0]:
                _load_identity(self.server, cert, key)
            for pem in pins:
                if pem not in self._anchors:
                    _pin(self.server, pem.encode("ascii"))
        self._anchors.update(pins)
        self._client = client_context(cert, key, joined)
        self._state = state
        if not first:
            log.info("tls.reloaded", certificate=cert_fingerprint(cert), pinned=sorted(self.pinned()))
        return True


def client_ssl(peer_tls: PeerTLS | None) -> ssl.SSLContext | bool:
    """What aiohttp's `ssl=` takes for one request to the peer (False: the insecure dev mode)."""
    return False if peer_tls is None else peer_tls.client()


def peer_session(peer_tls: PeerTLS | None, timeout_seconds: float, limit: int) -> aiohttp.ClientSession:
    """A client session to the peer over the pinned mutual TLS of the moment, at most `limit`
    connections, each request bounded by `timeout_seconds`."""
    connector = aiohttp.TCPConnector(ssl=client_ssl(peer_tls), limit=limit)
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_seconds), connector=connector)


async def cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background task and wait until it has stopped (None: nothing to stop)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
