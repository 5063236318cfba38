"""`archiver serve` as a real process: schedule, metrics, health, JSON logs, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pymongo

from conftest import free_port
from test_crash import ARCHIVER, _config, _seed


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_serve_archives_exposes_metrics_and_stops_on_sigterm(nx_uri, keys, tmp_path, db_names) -> None:
    rooms = _seed(nx_uri, db_names["source.database"], 12)
    port = free_port()
    config = _config(tmp_path, nx_uri, db_names, keys, **{
        "archive.workers": 1, "metrics.port": port, "metrics.host": "127.0.0.1", "logging.level": "INFO",
        "schedule.archive": "*/5 * * * *"})
    serve = subprocess.Popen([ARCHIVER, "--config", str(config), "serve"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        entries = pymongo.MongoClient(nx_uri)[db_names["index.database"]]["archive_index"]
        deadline = time.monotonic() + 120
        while entries.count_documents({"status": "archived"}) < len(rooms):
            assert serve.poll() is None, serve.stderr.read()
            assert time.monotonic() < deadline, "serve did not archive the chats in time"
            time.sleep(0.2)
        # The pass records its metrics once its worker process has exited, after its last chat.
        while "archiver_last_pass_end_timestamp_seconds 0.0" in _get(f"http://127.0.0.1:{port}/metrics")[1]:
            assert time.monotonic() < deadline, "the pass did not end in time"
            time.sleep(0.2)
        status, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and body == "ok\n"
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert f"archiver_chats_archived_total {float(len(rooms))}" in metrics
        assert 'archiver_stage_seconds_total{stage="render"}' in metrics
        assert "archiver_leases_lost_total 0.0" in metrics and "archiver_worker_deaths_total 0.0" in metrics
        assert "archiver_oldest_unarchived_age_seconds 0.0" in metrics
        assert 'archiver_jobs{state="done"} 12.0' in metrics
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            serve.kill()
    lines = [json.loads(line) for line in serve.stderr.read().splitlines() if line.strip()]
    events = [line["event"] for line in lines]
    assert events.count("archived") == len(rooms) and "serve_stopped" in events
    text = json.dumps(lines)
    assert "Buongiorno" not in text and "BEGIN" not in text, "no message text or key material in logs"
