"""The newest message time discovery records for a version (source.newest_ms): numbers as stored,
anything that is no readable time (years 1 to 9999) left out."""

from __future__ import annotations

import datetime as dt

import pytest
from bson.datetime_ms import DatetimeMS
from bson.int64 import Int64

from archiver.source import newest_ms

FIRST, LAST = -62_135_596_800_000, 253_402_300_799_999  # 0001-01-01, the last ms of 9999


def _chat(*stamps) -> dict:
    return {"messages": [{"data": {"ts": ts}} for ts in stamps] + [{"data": "garbage"}, "garbage", {"other": 1}]}


@pytest.mark.parametrize("stamps, newest", [
    ((1_000, 2_000.5, 1_500), 2_000.5),
    ((1_700_000_000_123, Int64(1_700_000_000_124)), 1_700_000_000_124.0),
    ((5, "7"), 7.0),
    ((5, dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.timezone.utc)), 1_000.0),
    ((5, DatetimeMS(9)), 9.0),
    ((FIRST, FIRST - 1), float(FIRST)),
    ((1, LAST, LAST + 1), float(LAST)),
    ((1, 253_402_300_800_000, 10 ** 30), 1.0),  # year 10000 and beyond: no readable time
    ((1, float("nan"), float("inf"), -float("inf"), True), 1.0),
    ((True, None, "soon", [3]), None),
    ((), None),
])
def test_newest_ms_takes_numbers_as_stored_and_skips_unreadable_times(stamps, newest) -> None:
    found = newest_ms(_chat(*stamps))
    assert found == newest and (found is None or type(found) is float)
