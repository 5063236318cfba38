"""A real RFC 3161 timestamp authority over HTTP on 127.0.0.1, for the tests.

pyHanko's DummyTimeStamper builds and signs the tokens (a genuine TimeStampResp
with a TSTInfo signed by a certificate with the critical timeStamping extended key
usage, as `openssl ts -verify` demands); http.server carries them as RFC 3161
section 3.4 says (POST application/timestamp-query, answer application/timestamp-reply).
Paths other than `/` misbehave on purpose: `/garbage` answers bytes that are no
TimeStampResp, `/skewed` stamps two days in the past, `/ahead` two days in the future, `/wrong-imprint` stamps
another digest, `/wrong-nonce` answers another nonce than the request's, `/by-ca` stamps with the authority's CA key
(a CA's certificate, no timeStamping extended key usage: `openssl ts -verify` refuses it), `/no-certs` leaves its
certificate out of the token, `/bulky` embeds 24 certificates in it, `/refuse` answers status
"rejection".
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.timestamps import DummyTimeStamper


@dataclass
class TimestampAuthority:
    url: str  # the well-behaved endpoint
    ca_pem: Path  # trust anchor for `openssl ts -verify -CAfile`
    ca_key_pem: Path  # its key, for tokens a test makes with it (a CA's, not a timestamp authority's)
    cert_pem: Path  # the TSA's own certificate
    requests: list[str]  # paths asked, in order

    def at(self, path: str) -> str:
        return self.url.rstrip("/") + path


def _certificate(subject: str, key: rsa.RSAPrivateKey, issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
                 ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=30))
               .not_valid_after(now + dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        builder = builder.add_extension(x509.KeyUsage(True, True, False, False, False, False, False, False, False),
                                        critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _filler(ca: x509.Certificate, ca_key: rsa.RSAPrivateKey, serial: int) -> asn1_x509.Certificate:
    """Another certificate for a token to carry (CN=Filler SERIAL, the CA's own key: nothing to generate)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Filler {serial}")])
    now = dt.datetime.now(dt.timezone.utc)
    made = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.subject).public_key(ca_key.public_key())
            .serial_number(serial + 1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    return asn1_x509.Certificate.load(made.public_bytes(serialization.Encoding.DER))


def _stampers(directory: Path) -> tuple[dict[str, DummyTimeStamper], Path, Path]:
    ca_key = rsa.generate_private_key(65537, 2048)
    ca = _certificate("Test Timestamp Root", ca_key, None, ca=True)
    tsa_key = rsa.generate_private_key(65537, 2048)
    tsa = _certificate("Test Timestamp Authority", tsa_key, (ca.subject, ca_key), ca=False)
    der = serialization.Encoding.DER
    cert = asn1_x509.Certificate.load(tsa.public_bytes(der))
    key = asn1_keys.PrivateKeyInfo.load(tsa_key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                                                serialization.NoEncryption()))
    ca_pem, cert_pem = directory / "tsa-ca.pem", directory / "tsa.pem"
    (directory / "tsa-ca.key.pem").write_bytes(ca_key.private_bytes(serialization.Encoding.PEM,
                                                                    serialization.PrivateFormat.PKCS8,
                                                                    serialization.NoEncryption()))
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(tsa.public_bytes(serialization.Encoding.PEM))
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)
    ca_asn1 = asn1_x509.Certificate.load(ca.public_bytes(der))
    ca_private = asn1_keys.PrivateKeyInfo.load(ca_key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                                                    serialization.NoEncryption()))
    stampers = {"/": DummyTimeStamper(cert, key), "/skewed": DummyTimeStamper(cert, key, fixed_dt=past),
                "/wrong-nonce": DummyTimeStamper(cert, key), "/by-ca": DummyTimeStamper(ca_asn1, ca_private),
                "/no-certs": DummyTimeStamper(cert, key),
                # 24 certificates (about 20 KB) embedded in every token: more room than a signature reserves
                "/bulky": DummyTimeStamper(cert, key, certs_to_embed=[_filler(ca, ca_key, n) for n in range(24)]),
                "/ahead": DummyTimeStamper(cert, key, fixed_dt=future), "/wrong-imprint": DummyTimeStamper(cert, key)}
    return stampers, ca_pem, cert_pem


def start(directory: Path) -> tuple[TimestampAuthority, ThreadingHTTPServer]:
    stampers, ca_pem, cert_pem = _stampers(directory)
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            asked.append(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Type") != "application/timestamp-query":
                return self._answer(400, b"not a timestamp query", "text/plain")
            if self.path == "/garbage":
                return self._answer(200, b"\x30\x03garbage, not DER", "application/timestamp-reply")
            request = tsp.TimeStampReq.load(body)
            if self.path == "/refuse":
                status = tsp.PKIStatusInfo({"status": "rejection", "status_string": ["policy says no"]})
                body = status.dump()  # TimeStampResp without a token (asn1crypto insists on one)
                return self._answer(200, b"\x30" + bytes([len(body)]) + body, "application/timestamp-reply")
            stamper = stampers.get(self.path)
            if stamper is None:
                return self._answer(404, b"no such endpoint", "text/plain")
            if self.path == "/wrong-imprint":
                imprint = request["message_imprint"]
                other = tsp.MessageImprint({"hash_algorithm": imprint["hash_algorithm"],
                                            "hashed_message": hashlib.sha256(b"something else").digest()})
                request = tsp.TimeStampReq({"version": 1, "message_imprint": other, "nonce": request["nonce"],
                                            "cert_req": True})
            if self.path == "/wrong-nonce":
                request = tsp.TimeStampReq({"version": 1, "message_imprint": request["message_imprint"],
                                            "nonce": request["nonce"].native + 1, "cert_req": True})
            answer = stamper.request_tsa_response(request)
            if self.path == "/no-certs":  # as if certReq were false (DummyTimeStamper always embeds it)
                signed = answer["time_stamp_token"]["content"]
                bare = cms.SignedData({name: signed[name] for name in ("version", "digest_algorithms",
                                                                       "encap_content_info", "signer_infos")})
                answer = tsp.TimeStampResp({"status": answer["status"], "time_stamp_token": cms.ContentInfo(
                    {"content_type": "signed_data", "content": bare})})
            self._answer(200, answer.dump(), "application/timestamp-reply")

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="tsa").start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    return TimestampAuthority(url, ca_pem, directory / "tsa-ca.key.pem", cert_pem, asked), server
