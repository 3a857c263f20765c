"""``--to`` parsing: one clock. A time without a zone is read in the zone the caller names (the
CLI: the user's own), and refused where no zone is named (the service)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from proxy.timeparse import LOCAL, NoZone, format_both_clocks, parse_target, to_us

NEW_YORK = ZoneInfo("America/New_York")
NOW = dt.datetime(2026, 12, 6, 14, 30, 0, tzinfo=dt.UTC)  # 09:30 in New York (EST, UTC-5)


def test_a_time_of_day_is_read_on_the_users_clock():
    target = parse_target("09:08:43", now=NOW, zone=NEW_YORK)
    assert target.kind == "time" and target.assumed_local
    assert target.time_us == to_us(dt.datetime(2026, 12, 6, 14, 8, 43, tzinfo=dt.UTC))


def test_a_date_time_without_zone_follows_daylight_saving_of_its_own_date():
    summer = parse_target("2026-07-01T12:00:00", now=NOW, zone=NEW_YORK)  # EDT, UTC-4
    winter = parse_target("2026-12-01 12:00:00", now=NOW, zone=NEW_YORK)  # EST, UTC-5
    assert summer.time_us == to_us(dt.datetime(2026, 7, 1, 16, 0, tzinfo=dt.UTC))
    assert winter.time_us == to_us(dt.datetime(2026, 12, 1, 17, 0, tzinfo=dt.UTC))


def test_a_time_with_a_zone_ignores_the_users_zone():
    target = parse_target("2026-12-06T10:00:00+02:00", now=NOW, zone=NEW_YORK)
    assert not target.assumed_local
    assert target.time_us == to_us(dt.datetime(2026, 12, 6, 8, 0, tzinfo=dt.UTC))


@pytest.mark.parametrize("text", ["09:08:43", "2026-12-06T09:08:43", "2026-12-06 09:08"])
def test_without_a_named_zone_a_zoneless_time_is_refused_not_guessed(text):
    with pytest.raises(NoZone, match="has no time zone"):
        parse_target(text, now=NOW)


@pytest.mark.parametrize("text", ["2026-12-06T09:08:43Z", "-15m", "lsn:12", "0-1-345"])
def test_without_a_named_zone_absolute_and_exact_targets_are_fine(text):
    assert parse_target(text, now=NOW).text == text


def test_relative_times_both_ways():
    assert parse_target("-90s", now=NOW).time_us == to_us(NOW) - 90_000_000
    assert parse_target("+1m", now=NOW).time_us == to_us(NOW) + 60_000_000  # refused later: the future
    with pytest.raises(ValueError, match="not a relative time"):
        parse_target("+soon", now=NOW)


def test_the_process_zone_is_used_with_local():
    target = parse_target("2026-12-06T09:08:43", now=NOW, zone=LOCAL)
    expected = dt.datetime(2026, 12, 6, 9, 8, 43).astimezone()  # the process's zone, as the CLI's
    assert target.time_us == to_us(expected)


def test_both_clocks_side_by_side():
    at = to_us(dt.datetime(2026, 12, 6, 14, 8, 43, tzinfo=dt.UTC))
    assert format_both_clocks(at, NEW_YORK) == "2026-12-06 14:08:43Z (09:08:43 EST, local)"
    assert format_both_clocks(at + 250_000, NEW_YORK) == "2026-12-06 14:08:43.250000Z (09:08:43.250000 EST, local)"
    late = to_us(dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC))  # the previous day in New York
    assert format_both_clocks(late, NEW_YORK) == "2026-12-07 02:00:00Z (2026-12-06 21:00:00 EST, local)"
