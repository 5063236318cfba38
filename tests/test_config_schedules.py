"""schedule.* are crontab(5) expressions (UTC): the day of the week numbered as cron numbers it (0 and 7 Sunday),
a day that matches either restricted day field (cron's rule), and no schedule that never fires."""

from __future__ import annotations

import datetime as dt

import pytest

from archiver.config import ConfigError, load
from archiver.schedules import trigger

START = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)  # a Thursday
NAMES = {name: n for n, name in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}


def _values(field: str, low: int, high: int) -> set[int]:
    """What crontab(5) allows in FIELD (day of month, or day of week as 0-7 or names): an independent reading."""
    def value(text: str) -> int:
        return NAMES[text.lower()] if text.lower() in NAMES else int(text)

    allowed: set[int] = set()
    for item in field.split(","):
        span, _, step = item.partition("/")
        first, _, last = span.partition("-")
        lo, hi = (low, high) if span == "*" else (value(first), value(last or first))
        allowed.update(range(lo, hi + 1, int(step or 1)))
    return allowed


def _cron_days(day: str, weekday: str, weeks: int) -> list[dt.date]:
    """The days cron runs "0 12 DAY * WEEKDAY" on from START: both day fields must match if either starts with
    "*", else either one."""
    days_of_month = _values(day, 1, 31)
    weekdays = {n % 7 for n in _values(weekday, 0, 7)}
    either = not (day.startswith("*") or weekday.startswith("*"))
    found = []
    for offset in range(7 * weeks):
        date = START.date() + dt.timedelta(days=offset)
        by_day, by_weekday = date.day in days_of_month, date.isoweekday() % 7 in weekdays
        if (by_day or by_weekday) if either else (by_day and by_weekday):
            found.append(date)
    return found


def _fire_days(expression: str, weeks: int) -> list[dt.date]:
    made, fired, t = trigger(expression), [], START - dt.timedelta(minutes=1)
    end = START + dt.timedelta(weeks=weeks)
    while (t := made.get_next_fire_time(None, t + dt.timedelta(minutes=1))) is not None and t < end:
        assert (t.hour, t.minute, t.tzinfo.utcoffset(t)) == (12, 0, dt.timedelta(0))
        fired.append(t.date())
    return fired


@pytest.mark.parametrize("weekday", [
    "*", "0", "7", "1", "6", "1-5", "0-6", "0-7", "5-7", "*/2", "*/3", "*/7", "1-5/2", "0-7/3", "0,3,7", "1,3-4",
    "sun", "SUN", "mon-fri", "sat,1", "sun,0,7", "2,wed-fri", "sun-sat", "sun-tue", "Mon-Fri/2", "mon-5"])
def test_each_day_of_week_form_fires_on_the_days_cron_runs_it(weekday: str) -> None:
    assert _fire_days(f"0 12 * * {weekday}", 5) == _cron_days("*", weekday, 5)


@pytest.mark.parametrize("day, weekday", [("1", "1"), ("13", "5"), ("1-7", "0"), ("*/2", "1"), ("15", "*/2"),
                                          ("30", "mon-fri")])
def test_both_day_fields_restricted_means_either_as_in_cron(day: str, weekday: str) -> None:
    # crontab(5): "if both fields are restricted (not starting with *), the command runs when either matches"
    assert _fire_days(f"0 12 {day} * {weekday}", 9) == _cron_days(day, weekday, 9)


def test_a_sunday_schedule_fires_on_sunday_and_seven_is_sunday_too() -> None:
    for weekday in ("0", "7"):
        config = load(None, environ={"ARCHIVER_SCHEDULE__SEAL": f"30 0 * * {weekday}"})
        fire = trigger(config["schedule.seal"]).get_next_fire_time(None, START)
        assert fire == dt.datetime(2026, 11, 29, 0, 30, tzinfo=dt.timezone.utc), fire  # Sunday 29 November


@pytest.mark.parametrize("weekday, complaint", [
    ("8", "day of week '8'"), ("5-3", "day of week '5-3'"), ("*/0", "day of week '\\*/0'"),
    ("5/2", "day of week '5/2'"), ("1-", "day of week '1-'"), ("funday", "funday"),
    ("sat-sun", "day of week 'sat-sun'"), ("fri-mon", "day of week 'fri-mon'"), ("mon-xyz", "'xyz' is not a day")])
def test_a_day_of_week_cron_does_not_know_is_refused_naming_it(weekday: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=f"schedule.retention: is not a crontab expression .*{complaint}"):
        load(None, environ={"ARCHIVER_SCHEDULE__RETENTION": f"45 4 * * {weekday}"})


@pytest.mark.parametrize("key", ["seal", "retention", "discovery_rescan", "archive"])
@pytest.mark.parametrize("expression", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 */2"])
def test_a_schedule_that_never_fires_is_refused_naming_the_key(key: str, expression: str) -> None:
    with pytest.raises(ConfigError, match=f"schedule.{key}: never fires"):
        load(None, environ={f"ARCHIVER_SCHEDULE__{key.upper()}": expression})


def test_a_rare_schedule_is_not_never() -> None:
    # 29 February fires in leap years only; "30 2 * 1" is 30 February or a Monday in February: every February
    for expression in ("0 0 29 2 *", "0 0 30 2 1"):
        assert load(None, environ={"ARCHIVER_SCHEDULE__SEAL": expression})["schedule.seal"] == expression


def test_an_empty_archive_schedule_is_refused_and_the_others_disable_their_job() -> None:
    with pytest.raises(ConfigError, match="schedule.archive: must be set"):
        load(None, environ={"ARCHIVER_SCHEDULE__ARCHIVE": ""})
    for key in ("seal", "retention", "discovery_rescan"):
        assert load(None, environ={f"ARCHIVER_SCHEDULE__{key.upper()}": ""})[f"schedule.{key}"] == ""
