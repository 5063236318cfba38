"""schedule.* as crontab(5) reads them, made into APScheduler 3 triggers (UTC).

APScheduler 3's CronTrigger.from_crontab numbers the day of the week from Monday = 0 and ANDs the two day
fields; cron numbers it from Sunday = 0 (7 is Sunday too) and runs on a day that matches either day field when
both are restricted. `trigger` is the one place a schedule is read: by the configuration's check and by
`archiver serve`.
"""

from __future__ import annotations

import datetime as dt
import re

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab's 0-6 (7 is Sunday again)
_DAY = r"(?:\d+|[a-z]{3})"
_ITEM = re.compile(rf"(\*|{_DAY}(?:-{_DAY})?)(?:/(\d+))?$")  # *, d, d-d (a number or a name), each with an optional /step


class NeverFires(ValueError):
    """A valid expression that no date matches (30 February)."""


def trigger(expression: str) -> BaseTrigger:
    """The UTC trigger for crontab EXPRESSION; ValueError saying what is wrong, NeverFires if no date matches."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields: {len(fields)}, expected 5 (minute hour day month weekday)")
    minute, hour, day, month, weekday = fields
    weekdays = apscheduler_weekdays(weekday)

    def cron(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week, timezone="UTC")

    if day.startswith("*") or weekday.startswith("*"):
        made: BaseTrigger = cron(day, weekdays)
    else:  # both restricted: cron runs on a day either one matches
        made = OrTrigger([cron(day, "*"), cron("*", weekdays)])
    if made.get_next_fire_time(None, dt.datetime.now(dt.timezone.utc)) is None:
        raise NeverFires("never fires: no date matches it")
    return made


def apscheduler_weekdays(field: str) -> str:
    """Crontab's day-of-week FIELD (0 and 7 Sunday, 1-6 Monday to Saturday, or sun-sat; ranges, lists and steps,
    a range from the smaller day to the larger in crontab's week, which starts on Sunday) as APScheduler's, by name."""
    if field == "*":
        return field
    days: list[str] = []
    for item in field.lower().split(","):
        days += [DAY_NAMES[n % 7] for n in _days(item)]
    return ",".join(dict.fromkeys(days))


def _days(item: str) -> range:
    """The crontab day numbers ITEM of a day-of-week list names (ValueError if it is not crontab's)."""
    match = _ITEM.match(item)
    if match is None:
        raise ValueError(f"day of week {item!r}: not a day (0-7, 0 and 7 Sunday, or sun-sat), a range a-b, a step "
                         "*/n or a-b/n")
    span, step = match.group(1), int(match.group(2) or 1)
    if span == "*":
        first, last = 0, 7
    else:
        start, _, end = span.partition("-")
        first, last = _day(start, item), _day(end or start, item)
        if match.group(2) and not end:
            raise ValueError(f"day of week {item!r}: a step needs a range (a-b/n) or * (*/n)")
    if not (0 <= first <= last <= 7) or step < 1:
        raise ValueError(f"day of week {item!r}: days are 0-7 (0 and 7 Sunday) or sun-sat, a range goes from the "
                         "earlier day of crontab's week (Sunday first) to the later, a step is 1 or more")
    return range(first, last + 1, step)


def _day(text: str, item: str) -> int:
    """A day of crontab's week by number or name (sun 0 ... sat 6)."""
    if text.isdigit():
        return int(text)
    if text not in DAY_NAMES:
        raise ValueError(f"day of week {item!r}: {text!r} is not a day (sun, mon, tue, wed, thu, fri, sat)")
    return DAY_NAMES.index(text)
