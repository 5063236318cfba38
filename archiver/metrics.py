"""Prometheus metrics and a health endpoint for `archiver serve`.

`/metrics` is the Prometheus text format; `/healthz` answers 200 while the
service is healthy (see `Service.healthy`), 503 otherwise, and says why below
the first line (see `Service.health_notes`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from archiver.logs import event
from archiver.certificates import Expiry

STAGES = ("discover", "claim", "read", "render", "sign", "encrypt", "put", "index")
MAX_CONNECTIONS = 16  # handler threads at most; a connection beyond them is closed at once
REQUEST_TIMEOUT = 5.0  # seconds a connection may stay silent before it is closed


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.archived = Counter("archiver_chats_archived", "Chats archived (new versions)", registry=self.registry)
        self.failed = Counter("archiver_chats_failed", "Chat attempts that failed and will be retried",
                              registry=self.registry)
        self.quarantined = Counter("archiver_chats_quarantined", "Chats put in quarantine", registry=self.registry)
        self.leases_lost = Counter("archiver_leases_lost", "Chats given up because their lease ran out and another "
                                   "worker took them over (raise archive.lease_seconds if this grows)",
                                   registry=self.registry)
        self.worker_deaths = Counter("archiver_worker_deaths", "Worker processes that died during a pass (killed "
                                     "by the operating system: out of memory?)", registry=self.registry)
        self.stage_seconds = Counter("archiver_stage_seconds", "Time spent per pipeline stage", ["stage"],
                                     registry=self.registry)
        self.pass_seconds = Histogram("archiver_pass_seconds", "Duration of archive passes", registry=self.registry,
                                      buckets=(1, 5, 15, 60, 300, 900, 3600, float("inf")))
        self.oldest_pending = Gauge(
            "archiver_oldest_unarchived_age_seconds",
            "Age of the oldest discovered chat not archived yet (pending, failed, claimed or quarantined)",
            registry=self.registry)
        self.queue = Gauge("archiver_jobs", "Jobs by state", ["state"], registry=self.registry)
        self.last_pass_end = Gauge("archiver_last_pass_end_timestamp_seconds", "When the last pass ended",
                                   registry=self.registry)
        self.rescan_failures = Counter("archiver_rescan_failures", "Full rediscoveries (discovery_rescan) that "
                                       "failed", registry=self.registry)
        self.last_rescan_ok = Gauge("archiver_last_rescan_ok", "0 after a full rediscovery failed, until one "
                                    "succeeds; 1 otherwise", registry=self.registry)
        self.last_rescan_ok.set(1)
        self.signing_expiry = Gauge("archiver_signing_certificate_expiry_days",
                                    "Days until the signing certificate expires (negative: expired)",
                                    registry=self.registry)
        self.recipient_expiry = Gauge("archiver_recipient_certificate_expiry_days",
                                      "Days until a recipient certificate expires (negative: expired)",
                                      ["fingerprint", "subject"], registry=self.registry)

    def record_certificates(self, expiries: list[Expiry]) -> None:
        """Gauges of days left, computed when scraped, for the certificates in use."""
        self.recipient_expiry.clear()  # a recipient no longer configured stops being reported
        for expiry in expiries:
            gauge = (self.signing_expiry if expiry.role == "signing"
                     else self.recipient_expiry.labels(expiry.fingerprint, expiry.subject))
            gauge.set_function(expiry.days_left)

    def record_pass(self, report) -> None:
        self.archived.inc(report.archived)
        self.failed.inc(len(report.failed))
        self.quarantined.inc(len(report.quarantined))
        self.leases_lost.inc(len(report.leases_lost))
        self.worker_deaths.inc(report.worker_deaths)
        for stage, seconds in report.stages.items():
            self.stage_seconds.labels(stage).inc(seconds)
        self.pass_seconds.observe(report.seconds)
        self.last_pass_end.set(time.time())

    def record_rescan(self, ok: bool) -> None:
        if not ok:
            self.rescan_failures.inc()
        self.last_rescan_ok.set(1 if ok else 0)


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most MAX_CONNECTIONS of them; errors become log events, not
    tracebacks on stderr (a client that drops the connection, say)."""

    request_queue_size = 64  # listen backlog: a burst of scrapes waits to be accepted, not for SYN retries

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):  # busy (or flooded): drop it rather than grow
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        event("metrics_client_dropped", logging.DEBUG, error=f"{type(error).__name__}: {error}")


def serve_http(metrics: Metrics, port: int, healthy: Callable[[], bool], host: str = "127.0.0.1",
               notes: Callable[[], list[str]] | None = None, timeout: float = REQUEST_TIMEOUT) -> ThreadingHTTPServer:
    """Start /metrics and /healthz on HOST:PORT in a daemon thread; NOTES are more lines for /healthz;
    silent connections close after TIMEOUT s."""

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            self.timeout = timeout  # socket timeout of every read and write of this connection
            super().setup()

        def log_message(self, *args) -> None:  # access logs would drown the structured ones
            pass

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                ok = healthy()
                lines = ["ok" if ok else "unhealthy", *(notes() if notes else [])]
                self._answer(200 if ok else 503, "".join(f"{line}\n" for line in lines).encode(),
                             "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found\n", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = _BoundedServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics-http").start()
    return server
