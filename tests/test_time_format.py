"""The renderer's times: written without strftime for numeric formats, the same text as strftime."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from archiver.render.pdf import PdfRenderer, time_formatter

FORMATS = ["%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%Y", "%%", "%m%%", "{%Y}%%x %S}{ 100%%", "plain text", "%", "x%",
           "%%%Y", "%Y-%m-%dT%H:%M:%S%z", "%b %d %Y, %A", "%Y-%j %f", ""]


@pytest.mark.parametrize("fmt", FORMATS)
def test_time_formatter_writes_what_strftime_writes(fmt: str) -> None:
    rng = random.Random(fmt)
    write = time_formatter(fmt)
    moments = [dt.datetime(1, 1, 1), dt.datetime(999, 12, 31, 23, 59, 59), dt.datetime(9999, 12, 31, 23, 59, 59)]
    moments += [dt.datetime(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                            rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999_999), tzinfo=dt.timezone.utc)
                 for _ in range(2_000)]
    for when in moments:
        assert write(when) == when.strftime(fmt), (fmt, when)


def test_renderer_times_carry_the_zone_offset() -> None:
    renderer = PdfRenderer("templates/transcript.toml", "America/St_Johns")  # a zone with a half-hour offset
    winter = dt.datetime(2026, 1, 5, 12, 0, 7, tzinfo=dt.timezone.utc)
    summer = dt.datetime(2026, 7, 5, 12, 0, 7, tzinfo=dt.timezone.utc)
    assert renderer._time(winter) == "2026-01-05 08:30:07 -03:30"
    assert renderer._time(summer) == "2026-07-05 09:30:07 -02:30"
    assert renderer._time(winter) == "2026-01-05 08:30:07 -03:30"  # the remembered offset, the same text
    assert renderer._time(None) == renderer.template.labels["time_unknown"]
