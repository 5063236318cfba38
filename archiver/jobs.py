"""`archiver serve`: the periodic jobs on APScheduler, until SIGTERM or SIGINT.

On a signal the running pass stops claiming, finishes the chats in hand and the
process exits 0; a second instance elsewhere picks up whatever is left.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from archiver.config import Config
from archiver.logs import event
from archiver.pipeline import Archiver


def serve(config: Config, stop: threading.Event | None = None) -> int:
    stop = stop or threading.Event()
    archiver = Archiver(config, stop)
    scheduler = BackgroundScheduler(timezone=dt.timezone.utc)
    once = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
    scheduler.add_job(archiver.run_pass, CronTrigger.from_crontab(config["schedule.archive"], timezone="UTC"),
                      id="archive", next_run_time=dt.datetime.now(dt.timezone.utc), **once)
    if config["schedule.discovery_rescan"]:
        scheduler.add_job(archiver.discover, CronTrigger.from_crontab(config["schedule.discovery_rescan"], timezone="UTC"),
                          kwargs={"full": True}, id="discovery_rescan", **once)
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    scheduler.start()
    event("serve_started", jobs=[job.id for job in scheduler.get_jobs()])
    while not stop.wait(1.0):
        pass
    event("serve_stopping")
    scheduler.shutdown(wait=True)  # the running pass sees `stop` and finishes the chats in hand
    event("serve_stopped")
    return 0
