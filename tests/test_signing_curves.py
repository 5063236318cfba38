"""ECDSA signing keys on curves every verifier we name checks: P-256, P-384, P-521. pdfsig (NSS) calls a PDF
signature by a key on another curve "Signature is Invalid" (secp256k1, brainpoolP256r1), and secp192r1 offers
96 bits of security: such a certificate is refused when the keys load, not found out in a courtroom."""

from __future__ import annotations

import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from reportlab.pdfgen.canvas import Canvas

from archiver.signing import Signer, SigningError, SigningIdentity, load_identity
from certfactory import make
from conftest import require_tool

SIGNING = ("digital_signature", "content_commitment")


def _pdfsig_says(identity: SigningIdentity, ca, tmp_path) -> str:
    """pdfsig's validation lines for a PDF IDENTITY signs, with an NSS database trusting CA."""
    canvas = Canvas(str(tmp_path / "plain.pdf"))
    canvas.drawString(72, 720, "evidence")
    canvas.save()
    (tmp_path / "signed.pdf").write_bytes(Signer(identity).sign_pdf((tmp_path / "plain.pdf").read_bytes()))
    nss = tmp_path / "nss"
    nss.mkdir()
    subprocess.run(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"], check=True)
    subprocess.run(["certutil", "-A", "-d", f"sql:{nss}", "-n", "CA", "-t", "CT,C,C", "-i", str(ca.cert_path)],
                   check=True)
    out = subprocess.run(["pdfsig", "-nssdir", f"sql:{nss}", str(tmp_path / "signed.pdf")], capture_output=True,
                         text=True).stdout
    return "\n".join(line.strip() for line in out.splitlines() if "Validation:" in line)


@pytest.mark.parametrize("curve", [ec.SECP192R1(), ec.SECP256K1(), ec.BrainpoolP256R1()], ids=lambda c: c.name)
def test_a_signing_key_on_a_curve_pdfsig_cannot_check_is_refused(tmp_path, curve) -> None:
    ca = make(tmp_path, "ca", usages=("key_cert_sign", "crl_sign"), ca=True)
    signer = make(tmp_path, "signer", usages=SIGNING, curve=curve, issuer=ca)
    with pytest.raises(SigningError, match=f"^signing.certificate: {signer.cert_path}: CN=signer: EC key on curve "
                                           f"{curve.name} \\(P-256, P-384 or P-521 needed\\)"):
        load_identity(str(signer.cert_path), str(signer.key_path))


def test_pdfsig_checks_the_curves_accepted_and_not_the_others(tmp_path) -> None:
    """Why the line is drawn there: pdfsig's verdict on the same PDF signed with each."""
    require_tool("pdfsig")
    require_tool("certutil")
    for curve, verdict in ((ec.SECP384R1(), "Signature is Valid."), (ec.SECP521R1(), "Signature is Valid."),
                           (ec.SECP256K1(), "Signature is Invalid.")):
        folder = tmp_path / curve.name
        ca = make(folder, "ca", usages=("key_cert_sign", "crl_sign"), ca=True)
        signer = make(folder, "signer", usages=SIGNING, curve=curve, issuer=ca)
        identity = SigningIdentity(signer.key, signer.cert, (ca.cert,))
        assert f"Signature Validation: {verdict}" in _pdfsig_says(identity, ca, folder), curve.name
        if verdict == "Signature is Valid.":
            assert load_identity(str(signer.cert_path), str(signer.key_path)).certificate == signer.cert
