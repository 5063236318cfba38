"""RFC 3161 timestamps from the configured authority (signing.timestamp_url), checked on arrival.

A token is accepted only when it is granted, answers our nonce, covers exactly the
digest we sent, and its time is within signing.timestamp_max_skew_seconds of our
clock: a timestamp authority with a wrong clock (or a proxy answering for it) would
otherwise date evidence wrongly for good. Every failure is a TimestampError, an
OSError: the archive pass treats it as an outage, fails the chat and retries it;
nothing is ever signed without the timestamp that was configured.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac

from asn1crypto import cms, tsp
from cryptography import x509
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.timestamps.common_utils import handle_tsp_response
from pyhanko.sign.timestamps.requests_client import RequestsHTTPTimeStamper

from archiver import certificates
from archiver.config import Config
from archiver.redact import redact

TIMEOUT_SECONDS = 10  # one request; a slower authority counts as unreachable this time


class TimestampError(OSError):
    """The timestamp authority could not be reached or sent an unusable answer; retried later.
    Its message never holds the URL's credentials (user:password@, ?token=): it is printed and logged."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "timestamp authority failed"


class CheckedTimeStamper(RequestsHTTPTimeStamper):
    """pyHanko's HTTP client, with every answer checked before pyHanko embeds it."""

    def __init__(self, url: str, max_skew_seconds: float, timeout: float = TIMEOUT_SECONDS) -> None:
        super().__init__(url, timeout=timeout)
        self.max_skew = dt.timedelta(seconds=max_skew_seconds)
        self.last_time: dt.datetime | None = None  # of the last token accepted: within the signer's validity?

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> cms.ContentInfo:
        try:
            # pyHanko's async_timestamp, with the nonce compared here: its own comparison, on a mismatch, fails
            # with an AttributeError (int.hex) that said nothing of a nonce.
            nonce, request = self.request_cms(message_digest, md_algorithm)
            token = handle_tsp_response(await self.async_request_tsa_response(request), None)
            if _tst_info(token)["nonce"].native != nonce:
                raise TimestampError("the token answers another nonce than our request's (a replayed or "
                                     "misdirected answer)")
            check_token(token, message_digest, md_algorithm, self.max_skew)
            unfit = authority_problems(token)
            if unfit:
                raise TimestampError("; ".join(unfit))
            self.last_time = _tst_info(token)["gen_time"].native
        except TimestampError as exc:
            raise TimestampError(f"timestamp authority {self.url}: {exc}") from None
        except Exception as exc:  # unreachable, an HTTP error, bytes that are not a TimeStampResp
            raise TimestampError(f"timestamp authority {self.url}: {_reason(exc)}") from None
        return token


def timestamper(url: str, max_skew_seconds: float) -> TimeStamper | None:
    """The timestamper for signing.timestamp_url, or None when it is empty (signatures stay B-B)."""
    return CheckedTimeStamper(url, max_skew_seconds) if url else None


def from_config(config: Config) -> TimeStamper | None:
    return timestamper(config["signing.timestamp_url"], config["signing.timestamp_max_skew_seconds"])


def timestamp(stamper: TimeStamper, data: bytes) -> bytes:
    """A DER TimeStampToken (CMS ContentInfo) over SHA-256(DATA): `openssl ts -verify -data FILE
    -in TOKEN -token_in -CAfile TSA-CA.pem` checks it."""
    token = asyncio.run(stamper.async_timestamp(hashlib.sha256(data).digest(), "sha256"))
    return token.dump()


def token_time(token: bytes) -> dt.datetime:
    """When the authority says it stamped TOKEN (genTime, UTC)."""
    return _tst_info(cms.ContentInfo.load(token))["gen_time"].native


def check_token(token: cms.ContentInfo, digest: bytes, md_algorithm: str, max_skew: dt.timedelta | None) -> None:
    """TimestampError unless TOKEN covers DIGEST (and, given MAX_SKEW, is dated close to now)."""
    info = _tst_info(token)
    imprint = info["message_imprint"]
    if imprint["hash_algorithm"]["algorithm"].native != md_algorithm or not hmac.compare_digest(
            imprint["hashed_message"].native, digest):
        raise TimestampError("the token does not cover the digest we sent (wrong message imprint)")
    if max_skew is None:
        return
    stamped = info["gen_time"].native
    skew = stamped - dt.datetime.now(dt.timezone.utc)
    if abs(skew) > max_skew:
        raise TimestampError(f"its time {stamped.isoformat()} is {abs(skew.total_seconds()):.0f} s "
                             f"{'ahead of' if skew.total_seconds() > 0 else 'behind'} our clock "
                             f"(signing.timestamp_max_skew_seconds is {max_skew.total_seconds():.0f}): "
                             "check both clocks")


def authority_problems(token: cms.ContentInfo) -> list[str]:
    """Why TOKEN's signer is no timestamp authority `openssl ts -verify` accepts (certificates.timestamping_problems),
    or carries no certificate of it (we ask for it: certReq); empty when it is one. Checked on arrival, before a
    token is embedded for good; whether the authority is one to trust is the verifier's (its trust anchors)."""
    signed = token["content"]
    sid = signed["signer_infos"][0]["sid"].chosen
    for cert in [choice.chosen for choice in signed["certificates"] or [] if choice.name == "certificate"]:
        if ((cert.issuer, cert.serial_number) == (sid["issuer"], sid["serial_number"].native)
                if isinstance(sid, cms.IssuerAndSerialNumber) else cert.key_identifier == sid.native):
            signer = x509.load_der_x509_certificate(cert.dump())
            unfit = certificates.timestamping_problems(signer)
            if unfit:
                return [f"signed by {certificates.subject(signer)}, which " + "; ".join(unfit)]
            return _valid_at(signer, _tst_info(token)["gen_time"].native)
    return ["the token carries no certificate of its signer"]


def _valid_at(signer: x509.Certificate, stamped: dt.datetime) -> list[str]:
    """Why SIGNER could not stamp at STAMPED, its token's time (outside its validity); empty if it could."""
    who = f"signed by {certificates.subject(signer)}, whose certificate"
    if stamped > signer.not_valid_after_utc:
        return [f"{who} expired on {signer.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, before the token's time"]
    if stamped < signer.not_valid_before_utc:
        return [f"{who} is not valid before {signer.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC, after the token's "
                "time"]
    return []


def _tst_info(token: cms.ContentInfo) -> tsp.TSTInfo:
    content = token["content"]["encap_content_info"]
    if content["content_type"].native != "tst_info":
        raise TimestampError("the answer is not a timestamp token")
    return content["content"].parsed


def _reason(exc: Exception) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if cause is not None and "communication" in text:
        return f"unreachable ({type(cause).__name__}: {cause})"
    return f"unusable answer ({type(exc).__name__}: {text})"
