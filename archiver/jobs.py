"""`archiver serve`: the periodic jobs on APScheduler, until SIGTERM or SIGINT.

On a signal the running pass stops claiming, finishes the chats in hand and the
process exits 0; another instance picks up whatever is left.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time

from apscheduler.schedulers.background import BackgroundScheduler
from pymongo.errors import ConnectionFailure

from archiver.artifacts import configured_keys, init_worker
from archiver.certificates import Expiry
from archiver.config import Config, ConfigError
from archiver import logs
from archiver.envelope import EnvelopeError
from archiver.logs import event
from archiver.redact import redact
from archiver.schedules import trigger
from archiver.source import missing_collections
from archiver.metrics import Metrics, serve_http
from archiver.mongo import unreachable_reason
from archiver.pipeline import Archiver, DiscoveryStopped, PassReport
from archiver.signing import SigningError
from archiver.status import STATES


class Service:
    """The archive pass, rediscovery and retention run on their schedules, with metrics and health."""

    def __init__(self, config: Config, stop: threading.Event) -> None:
        self.config = config
        self.stop = stop
        self.archiver = Archiver(config, stop)
        self.archiver.keep_workers = True  # one pool of worker processes for every pass
        self.metrics = Metrics()
        self.last_activity = time.monotonic()  # a chat archived (or found unchanged), or a pass that had
        # nothing to do; start-up until then (a clock step of the wall clock must not read as staleness, or hide it)
        self.last_error = ""
        self.no_progress = ""  # the last pass that handled chats archived none (kept until one archives some)
        self._progressed = 0  # chats of the running pass archived or found unchanged so far
        self.rescan_error = ""  # the last full rediscovery failed (kept until one succeeds)
        self.seal_error = ""  # the last seal run failed or found a sealed day changed
        self.retention_error = ""  # the last retention run failed (kept until one succeeds)
        self.certificates: list[Expiry] = []
        self.check_certificates()
        self.source_warnings: list[str] = []
        self.check_source()

    def check_certificates(self) -> None:
        """Load the signing and recipient certificates afresh and check them, each and together
        (SigningError, EnvelopeError)."""
        identity, recipients = configured_keys(self.config)
        previous, self.certificates = self.certificates, [
            Expiry.of("signing", identity.certificate), *(Expiry.of("recipient", cert) for cert in recipients)]
        if previous and previous != self.certificates:  # renewed: the in-process builder must use them too
            init_worker(self.config)
            self.archiver.close()  # and new worker processes, which load them
        self.metrics.record_certificates(self.certificates)

    def check_source(self) -> None:
        """Warn (log, /healthz) of a source collection that does not exist: every pass would be idle, which
        looks healthy. Checked at start-up and after each pass, so the warning goes once the collection exists."""
        warnings = missing_collections(self.config)
        for warning in set(warnings) - set(self.source_warnings):
            event("source_missing", logging.WARNING, warning=warning)
        self.source_warnings = warnings

    def archive_pass(self) -> None:
        try:  # a certificate that expired (or a file replaced) since start-up stops new passes
            self.check_certificates()
        except (SigningError, EnvelopeError) as exc:
            self.last_error = str(exc)
            event("pass_refused", logging.ERROR, error=self.last_error)
            return
        self._progressed = 0
        try:
            report = self.archiver.run_pass(progress=self._progress)
        except DiscoveryStopped:  # serve is stopping (recorded for status): no failure
            return
        except Exception as exc:  # MongoDB down, say: report it, keep serving, try at the next tick
            self.last_error = _described(exc)
            event("pass_failed", logging.ERROR, error=self.last_error)
            return
        self.last_error = ""
        self.check_source()
        if report.handled:  # a pass with nothing due says nothing of whether chats can be archived
            self.no_progress = _no_progress(report)
        if not report.handled or not self.no_progress:
            self._touch()
        self.metrics.record_pass(report)
        self.refresh_gauges()

    def _progress(self, report: PassReport) -> None:
        """Called after each indexed batch: activity only if chats were archived or found unchanged
        (a batch of failures is none)."""
        if report.archived + report.unchanged > self._progressed:
            self._progressed = report.archived + report.unchanged
            self._touch()

    def rescan(self) -> None:
        """The scheduled full rediscovery; a failure shows in /healthz, metrics and status, and is
        never raised into APScheduler (whose log nobody watches)."""
        try:
            self.archiver.rescan()
        except DiscoveryStopped:
            return
        except Exception as exc:
            self.rescan_error = _described(exc)
            event("rescan_failed", logging.ERROR, error=self.rescan_error)
        else:
            self.rescan_error = ""
        self.metrics.record_rescan(ok=not self.rescan_error)

    def seal(self) -> None:
        """The scheduled seal of the last days (idempotent); a failure shows like a failed rescan."""
        from archiver.audit import Actor
        from archiver.seals import default_days, seal_days

        try:
            outcomes = seal_days(self.config, default_days(self.config), Actor.current("archiver serve"))
            failed = [str(o) for o in outcomes if o.problems]
        except Exception as exc:
            failed = [_described(exc)]
        self.seal_error = "; ".join(failed)
        if failed:
            event("seal_failed", logging.ERROR, error=self.seal_error)

    def retention(self) -> None:
        """The scheduled retention run (nothing while no rules are configured); a failure is logged and
        shown in /healthz, never raised into APScheduler. An interrupted run is finished by the next one."""
        if not self.config["retention.rules"]:
            return
        from archiver.audit import Actor
        from archiver.retention import Deletions
        from archiver.runs import RunBusy

        try:
            deletions = Deletions(self.config)
            result = deletions.run("retention", deletions.plan_retention, {}, False, Actor.current("archiver serve"))
        except RunBusy as exc:  # an erasure (or another process's run) holds the one deletion lease: next time
            event("retention_waiting", reason=str(exc))
            return
        except Exception as exc:
            self.retention_error = _described(exc)
            event("retention_failed", logging.ERROR, error=self.retention_error)
            return
        self.retention_error = result.unaudited  # the next scheduled run writes the entry
        event("retention_done", run=result.report["run"], counts=result.report["counts"])

    def refresh_gauges(self) -> None:
        counts = self.archiver.queue.counts()
        for state in {*STATES, *counts}:  # a state no job is in any more drops to 0
            self.metrics.queue.labels(state).set(counts.get(state, 0))
        oldest = self.archiver.queue.oldest_open()
        age = (dt.datetime.now(dt.timezone.utc) - oldest).total_seconds() if oldest else 0.0
        self.metrics.oldest_pending.set(max(age, 0.0))

    def _touch(self) -> None:
        self.last_activity = time.monotonic()

    def health_notes(self) -> list[str]:
        """The lines /healthz shows below ok/unhealthy: the last error; warnings (a source collection that does not
        exist, certificates expiring soon)."""
        warnings = [f"warning: {w}" for w in self.source_warnings]
        warnings += [w for w in (c.warning() for c in self.certificates) if w]
        errors = [f"error: {self.last_error}"] if self.last_error else []
        errors += [f"no progress: {self.no_progress}"] if self.no_progress else []
        errors += [f"stale: no chat archived or found unchanged, and no idle pass ended, for {self._idle_minutes():.0f} "
                   "minutes (metrics.stale_after_minutes)"] if self._stale() else []
        errors += [f"rescan error: {self.rescan_error}"] if self.rescan_error else []
        errors += [f"seal error: {self.seal_error}"] if self.seal_error else []
        errors += [f"retention error: {self.retention_error}"] if self.retention_error else []
        return [redact(line) for line in [*errors, *warnings]]  # served to anyone who can reach the port

    def healthy(self) -> bool:
        """No failed pass, rescan, seal or retention run; the last pass that handled chats archived (or found
        unchanged) some; and a chat was archived or found unchanged, or a pass with nothing to do ended, within
        metrics.stale_after_minutes."""
        return not (self.last_error or self.no_progress or self.rescan_error or self.seal_error
                    or self.retention_error or self._stale())

    def _idle_minutes(self) -> float:
        return (time.monotonic() - self.last_activity) / 60

    def _stale(self) -> bool:
        return self._idle_minutes() >= self.config["metrics.stale_after_minutes"]


def _described(exc: Exception) -> str:
    """EXC in one line for logs and /healthz: a MongoDB outage without the driver's topology dump."""
    return f"{type(exc).__name__}: {unreachable_reason(exc) if isinstance(exc, ConnectionFailure) else exc}"


def _no_progress(report: PassReport) -> str:
    """Why REPORT's pass made no progress: chats failed and none was archived or found unchanged; "" if it
    did, or if only quarantined chats (which need a person, not a working archiver) made none."""
    if report.archived or report.unchanged or not report.failed:
        return ""
    first = next(iter({**report.failed, **report.quarantined}.values()), "")
    chats = "the chat" if report.handled == 1 else f"the {report.handled} chats"
    return (f"the last pass archived none of {chats} it handled: {len(report.failed)} failed, "
            f"{len(report.quarantined)} quarantined" + (f" (the first: {first})" if first else ""))


def serve(config: Config, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    logs.adopt("apscheduler", "py.warnings")  # every line on stderr in the same (JSON) format
    service = Service(config, stop)
    if config["metrics.port"]:
        try:
            serve_http(service.metrics, config["metrics.port"], service.healthy, config["metrics.host"],
                       service.health_notes)
        except OSError as exc:  # taken by another `serve` on this host, say, or a host name that does not resolve
            raise ConfigError(f"metrics.host, metrics.port ({config['metrics.host']}:{config['metrics.port']}): "
                              f"cannot listen there ({exc.strerror or exc}); choose another port for each `serve` "
                              "on one host, or metrics.port = 0 for none") from None
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
    once = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(service.archive_pass, trigger(config["schedule.archive"]),
                      id="archive", next_run_time=dt.datetime.now(dt.timezone.utc), **once)
    if config["schedule.discovery_rescan"]:
        scheduler.add_job(service.rescan, trigger(config["schedule.discovery_rescan"]), id="discovery_rescan", **once)
    if config["schedule.seal"]:
        scheduler.add_job(service.seal, trigger(config["schedule.seal"]), id="seal", **once)
    if config["schedule.retention"] and config["retention.rules"]:
        scheduler.add_job(service.retention, trigger(config["schedule.retention"]), id="retention", **once)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    scheduler.start()
    event("serve_started", jobs=[job.id for job in scheduler.get_jobs()], metrics_port=config["metrics.port"])
    while not stop.wait(1.0):
        pass
    event("serve_stopping")
    scheduler.shutdown(wait=True)  # the running pass sees `stop` and finishes the chats in hand
    service.archiver.close()
    event("serve_stopped")
    return 0
