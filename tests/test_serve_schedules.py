"""The jobs `archiver serve` schedules, on the days crontab(5) means, and what an empty schedule does."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest

import archiver.jobs as jobs
from archiver.cli import main
from conftest import write_toml

THURSDAY = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def _triggers(config) -> dict:
    """The triggers `archiver serve` schedules its jobs with under CONFIG, by job id."""
    seen: dict = {}
    stop = threading.Event()

    class Capturing(jobs.BackgroundScheduler):
        def add_job(self, func, trigger=None, **kwargs):
            seen[kwargs["id"]] = trigger
            return super().add_job(func, trigger, **kwargs)

        def start(self, *args, **kwargs):
            stop.set()  # the jobs are known: stop at once
            return super().start(*args, **kwargs)

    original, jobs.BackgroundScheduler = jobs.BackgroundScheduler, Capturing
    try:
        assert jobs.serve(config, stop) == 0
    finally:
        jobs.BackgroundScheduler = original
    return seen


def _days(trigger, hours: int) -> set[str]:
    days, t = set(), THURSDAY
    for _ in range(hours):
        t = trigger.get_next_fire_time(None, t + dt.timedelta(seconds=1))
        days.add(t.strftime("%a"))
    return days


def _serve_exit(config: Path) -> int | str:
    """How `archiver --config CONFIG serve` ends, or why not (in a daemon thread: a serve that starts is left)."""
    result: dict = {}

    def run() -> None:
        try:
            result["code"] = main(["--config", str(config), "serve"])
        except BaseException as exc:  # what a console user would see as a traceback
            result["code"] = f"raised {exc!r}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    return result.get("code", "still serving after 20 s")


def test_serve_runs_a_sunday_seal_on_sunday_and_weekday_passes_monday_to_friday(make_config) -> None:
    triggers = _triggers(make_config(metrics__port=0, schedule__seal="30 0 * * 0", schedule__archive="0 * * * 1-5",
                                     schedule__discovery_rescan="0 3 * * 7"))
    assert triggers["seal"].get_next_fire_time(None, THURSDAY).strftime("%A %d") == "Sunday 29"
    assert triggers["discovery_rescan"].get_next_fire_time(None, THURSDAY).strftime("%A %d") == "Sunday 29"
    assert _days(triggers["archive"], 24 * 7) == {"Mon", "Tue", "Wed", "Thu", "Fri"}


def test_serve_leaves_out_the_jobs_whose_schedule_is_empty(make_config) -> None:
    rules = {"default": {"source_days": 90, "archive_days": 3650}}
    assert set(_triggers(make_config(metrics__port=0, retention__rules=rules))) == {
        "archive", "discovery_rescan", "seal", "retention"}
    assert set(_triggers(make_config(metrics__port=0, retention__rules=rules, schedule__seal="",
                                     schedule__discovery_rescan="", schedule__retention=""))) == {"archive"}


def test_serve_with_an_empty_archive_schedule_exits_2_naming_the_key(make_config, tmp_path: Path, capsys) -> None:
    config = make_config().as_dict()
    wanted = ["mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients",
              "source.database", "index.database", "archive.workers", "logging.format"]
    path = write_toml(tmp_path / "a.toml", {**{k: config[k] for k in wanted}, "schedule.archive": "",
                                            "metrics.port": 0})
    assert _serve_exit(path) == 2  # before: an uncaught ValueError from APScheduler
    assert "schedule.archive: must be set" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["seal", "retention"])
def test_serve_refuses_a_schedule_that_never_fires(make_config, tmp_path: Path, capsys, key: str) -> None:
    config = make_config().as_dict()
    wanted = ["mongodb.uri", "storage.url", "signing.certificate", "signing.key", "encryption.recipients",
              "source.database", "index.database", "archive.workers", "logging.format"]
    path = write_toml(tmp_path / "a.toml", {**{k: config[k] for k in wanted}, f"schedule.{key}": "0 0 30 2 *",
                                            "metrics.port": 0})
    assert _serve_exit(path) == 2  # before: serve started, and that job never ran
    assert f"schedule.{key}: never fires" in capsys.readouterr().err
