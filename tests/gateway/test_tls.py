"""Mutual TLS with pinned self-signed certificates: real loopback handshakes between identities."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from customs_gateway.core.errors import ConfigError
from customs_gateway.service import tls

NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Ident:
    name: str
    cert: bytes
    key: bytes


def ident(name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Ident:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Ident(name, tls.make_self_signed(name, list(hosts), NOW - dt.timedelta(minutes=1), 30, key), pem)


US, CN, EVIL = ident("US-CBP"), ident("CN-GACC"), ident("EVIL")


def handshake(server: Ident, server_pin: Ident, client: Ident, client_pin: Ident) -> tuple[str, str]:
    """One exchange over loopback ssl sockets; returns (server, client) outcomes.

    Each outcome is `ok:<fingerprint of the certificate the other side presented>` or
    `refused:<exception name>`.
    """
    sctx = tls.server_context(server.cert, server.key, server_pin.cert)
    cctx = tls.client_context(client.cert, client.key, client_pin.cert)
    result: dict[str, str] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with sctx.wrap_socket(conn, server_side=True) as s:
                    fp = tls.peer_certificate_fingerprint(s)
                    s.sendall(s.recv(5).upper())
                    result["server"] = f"ok:{fp}"
            except (ssl.SSLError, OSError) as e:
                result["server"] = f"refused:{type(e).__name__}"
            finally:
                conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as raw, cctx.wrap_socket(raw) as c:
                fp = tls.peer_certificate_fingerprint(c)
                c.sendall(b"ping\n")  # TLS 1.3: the server judges our certificate after its Finished
                reply = c.recv(5)
                result["client"] = f"ok:{fp}" if reply == b"PING\n" else "refused:no-reply"
        except (ssl.SSLError, OSError) as e:
            result["client"] = f"refused:{type(e).__name__}"
        thread.join(10)
    return result["server"], result["client"]


def test_mutual_tls_between_pinned_peers() -> None:
    server, client = handshake(US, CN, CN, US)
    assert server == f"ok:{tls.cert_fingerprint(CN.cert)}"
    assert client == f"ok:{tls.cert_fingerprint(US.cert)}"


def test_third_identity_is_refused_as_client() -> None:
    server, client = handshake(US, CN, EVIL, US)
    assert server == "refused:SSLCertVerificationError"
    assert client.startswith("refused:")  # the server's alert arrives when we read


def test_third_identity_is_refused_as_server() -> None:
    # EVIL answers where US-CBP is expected; CN-GACC pins US-CBP's certificate and refuses.
    server, client = handshake(EVIL, CN, CN, US)
    assert client == "refused:SSLCertVerificationError"
    assert server.startswith("refused:")


def test_a_new_certificate_for_the_same_name_is_refused() -> None:
    # Pinning is by certificate, not by name: a second "US-CBP" certificate is a stranger.
    impostor = ident("US-CBP")
    server, client = handshake(impostor, CN, CN, US)
    assert client == "refused:SSLCertVerificationError"
    assert server.startswith("refused:")


async def test_client_without_certificate_is_refused() -> None:
    sctx = tls.server_context(US.cert, US.key, CN.cert)
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain.check_hostname = False
    plain.verify_mode = ssl.CERT_NONE
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=sctx)
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: None)
    port = srv.sockets[0].getsockname()[1]
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=plain)
            writer.write(b"x\n")
            await writer.drain()
            if not await asyncio.wait_for(reader.read(1), 5):
                raise ConnectionResetError("closed")
    finally:
        srv.close()
        await srv.wait_closed()


def test_contexts_require_tls13_and_client_certificates() -> None:
    s = tls.server_context(US.cert, US.key, CN.cert)
    c = tls.client_context(CN.cert, CN.key, US.cert)
    for ctx in (s, c):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.cert_store_stats()["x509"] == 1  # the pin is the only trust anchor
    assert c.check_hostname is False
    local = tls.local_server_context(US.cert, US.key)
    assert local.verify_mode == ssl.CERT_NONE and local.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_certificate_profile() -> None:
    cert = x509.load_pem_x509_certificate(ident("US-CBP", ("127.0.0.1", "gw.example", "::1")).cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "US-CBP"
    assert cert.issuer == cert.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=30)


def test_fingerprint_is_sha256_of_der() -> None:
    der = x509.load_pem_x509_certificate(US.cert).public_bytes(serialization.Encoding.DER)
    assert tls.cert_fingerprint(US.cert) == hashlib.sha256(der).hexdigest()

    class NoCert:
        def getpeercert(self, binary_form: bool = False) -> object:
            return None

    assert tls.peer_certificate_fingerprint(NoCert()) is None


def test_key_is_never_written_to_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    # memfd is the normal path; if it is used, no temporary file is created at all.
    import tempfile

    def no_tempfiles(*a: object, **k: object) -> None:
        raise AssertionError("a temporary file was created")

    monkeypatch.setattr(tempfile, "mkstemp", no_tempfiles)
    tls.server_context(US.cert, US.key, CN.cert)


def test_fallback_without_memfd_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os
    import tempfile

    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ctx = tls.client_context(CN.cert, CN.key, US.cert)
    assert isinstance(ctx, ssl.SSLContext)
    assert list(os.scandir(str(tmp_path))) == []


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        tls.server_context(US.cert, CN.key, CN.cert)  # key does not match the certificate
    with pytest.raises(ConfigError):
        tls.client_context(US.cert, US.key, b"not a certificate")
    with pytest.raises(ConfigError):
        tls.make_self_signed("US-CBP", [], NOW, 1, ec.generate_private_key(ec.SECP256R1()))
