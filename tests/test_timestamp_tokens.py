"""RFC 3161 tokens that look right but are not: another nonce than ours, or signed by the authority's CA itself
(a CA certificate without the timeStamping extended key usage, which `openssl ts -verify` refuses whatever
trust anchor it is given). tests/tsa.py serves both."""

from __future__ import annotations

import subprocess

from archiver.pipeline import Archiver
from conftest import require_tool
from retrieval_helpers import archive_samples, index
from test_pipeline import entries, job
from test_seals import DAY, backdate, built_on, seal_cli
from test_signers import cli
from test_timestamps import _archive_one


def test_an_answer_to_another_nonce_fails_the_chat_for_a_retry(make_config, tsa) -> None:
    config = make_config(signing__timestamp_url=tsa.at("/wrong-nonce"), archive__retry_backoff_seconds=0)
    room, report = _archive_one(config)
    assert report.archived == 0 and not report.quarantined
    assert "answers another nonce than our request's" in report.failed[room] and tsa.at("/wrong-nonce") in report.failed[room], report.failed
    assert entries(config, status="archived") == [] and job(config, room)["state"] == "failed"
    again = Archiver(config.with_overrides(**{"signing.timestamp_url": tsa.url})).run_pass()
    assert again.archived == 1


def test_openssl_refuses_a_token_signed_by_the_authoritys_ca(tsa, tmp_path) -> None:
    """What the verifier below must agree with: a tool we did not write."""
    from archiver import timestamps

    require_tool("openssl")
    (tmp_path / "data").write_bytes(b"evidence")
    for path, verdict in (("/", 0), ("/by-ca", 1)):
        stamper = timestamps.timestamper(tsa.at(path), 300)
        (tmp_path / "token").write_bytes(timestamps.timestamp(stamper, b"evidence"))
        done = subprocess.run(["openssl", "ts", "-verify", "-data", str(tmp_path / "data"), "-in",
                               str(tmp_path / "token"), "-token_in", "-CAfile", str(tsa.ca_pem)],
                              capture_output=True, text=True)
        assert done.returncode == verdict, (path, done.stdout, done.stderr)


def test_verify_refuses_timestamps_signed_by_the_anchor_ca_itself(make_config, keys, tsa, tmp_path, capsys) -> None:
    """Tokens of the anchor's own key, not of a timestamping certificate it issued: the seal's and each PDF's
    are problems, as `openssl ts -verify` (the bundle's README) would say."""
    config = make_config(signing__timestamp_url=tsa.at("/by-ca"))
    with built_on():
        archive_samples(config, count=2)
    backdate(config)
    assert seal_cli(config, tmp_path, "seal", "--from", DAY.isoformat(), "--to", DAY.isoformat()) == 0
    anchored = config.with_overrides(**{"signing.timestamp_trust_anchors": [str(tsa.ca_pem)]})
    capsys.readouterr()
    assert cli(anchored, tmp_path, "verify", "--all", "--key", str(keys["legal.key.pem"]), "--workers", "1") == 3
    out = capsys.readouterr().out
    assert f"PROBLEM seal {DAY}#1: its timestamp token's authority (CN=Test Timestamp Root)" in out, out
    for entry in index(config).find({}):
        assert (f"{entry['room']} v{entry['version']}: failed: pdf: its signature timestamp's authority chains to "
                "signing.timestamp_trust_anchors") in out, out
    assert "timeStamping" in out, out
