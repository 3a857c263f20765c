"""Parsing ``backtrack --to``: when (or at which transaction) to go back to. Pure functions.

Accepted forms:
  * ISO 8601 date-time, with a zone (``2026-11-22T10:15:00Z``, ``...+02:00``) or without one
    (then it is the user's local time, and the result says so);
  * a time of day today, the user's local time (``10:15``, ``10:15:07.250``);
  * a relative time from now (``-15m``, ``-2h30m``, ``-90s``; ``+1m`` parses, and is refused
    later as in the future, like any future time);
  * an exact point, meaning "the state just before that transaction": ``lsn:1234``, a GTID
    (MariaDB ``0-1-345``, MySQL ``3E11FA47-71CA-11E1-9E33-C80AA9429562:23``; ``gtid:`` in front
    when a MariaDB GTID could be read as a date, like ``gtid:2026-1-5``) or a binlog position
    ``binlog.000042:1337``.
Anything else is a ``ValueError`` listing these forms.

One clock: a time without a zone is read in the zone the caller passes (``zone``): the CLI
passes the user's own (``LOCAL``: its process's TZ) and sends the service an absolute instant.
Without ``zone`` (the service's admin API) such a time is refused (``NoZone``): the service
never guesses whose local time was meant.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from proxy.units import parse_duration

FORMS = ("ISO 8601 (2026-11-22T10:15:00Z, or without zone for local time), a time today (10:15), "
         "a relative time (-15m, -2h30m), lsn:N, a GTID (0-1-345 or UUID:N) or binlog file:pos")
LOCAL = "local"  # ``zone=LOCAL``: this process's time zone (TZ), daylight saving included


class NoZone(ValueError):
    """A time without a zone where nobody may guess one (the admin API)."""

_MARIADB_GTID = re.compile(r"\d+-\d+-\d+")
# UUID:N, or UUID:tag:N (MySQL 8.4+ tagged GTIDs; tags are case-insensitive, stored lower case)
_MYSQL_GTID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                         r"(:[A-Za-z_][A-Za-z0-9_]{0,31})?:\d+")
_POSITION = re.compile(r"([\w.-]+\.\d+):(\d+)")
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d{1,6})?)?")


@dataclass(frozen=True)
class Target:
    """A parsed ``--to``: either a wall-clock time or an exact transaction."""

    text: str
    kind: str  # "time" | "lsn" | "gtid" | "position"
    time_us: int | None = None  # for kind "time": microseconds since the epoch, UTC
    assumed_local: bool = False  # the text had no zone: local time was assumed
    lsn: int | None = None
    gtid: str | None = None
    position: tuple[str, int] | None = None

    def describe(self) -> str:
        if self.kind == "time":
            note = " (no zone given: local time)" if self.assumed_local else ""
            return f"{format_time_us(self.time_us)}{note}"
        return f"just before {self.text}"


def parse_target(text: str, now: dt.datetime | None = None, zone: dt.tzinfo | str | None = None) -> Target:
    """Parse ``--to``; ``now`` (aware) is injected by tests. A time without a zone is read in
    ``zone`` (a tzinfo, or ``LOCAL``); with ``zone=None`` it raises ``NoZone``."""
    value = text.strip()
    now = now or dt.datetime.now(dt.UTC)
    if not value:
        raise ValueError(f"--to is empty; use {FORMS}")
    if value.lower().startswith("lsn:"):
        digits = value[4:]
        if not digits.isdigit():
            raise ValueError(f"{text!r}: an LSN is lsn:<number>")
        return Target(text, "lsn", lsn=int(digits))
    if value.lower().startswith("gtid:"):
        return Target(text, "gtid", gtid=_gtid(value[5:], text))
    looks_like_date = _MARIADB_GTID.fullmatch(value) and len(value.split("-")[0]) == 4
    if (_MARIADB_GTID.fullmatch(value) and not looks_like_date) or _MYSQL_GTID.fullmatch(value):
        return Target(text, "gtid", gtid=_gtid(value, text))
    position = _POSITION.fullmatch(value)
    if position and not _TIME_OF_DAY.fullmatch(value):
        return Target(text, "position", position=(position.group(1), int(position.group(2))))
    if value[0] in "+-":
        try:
            seconds = parse_duration(value[1:])
        except ValueError:
            raise ValueError(f"{text!r} is not a relative time; use {FORMS}") from None
        sign = -1 if value[0] == "-" else 1
        return Target(text, "time", time_us=to_us(now) + sign * int(seconds * 1e6))
    if _TIME_OF_DAY.fullmatch(value):
        clock = dt.time.fromisoformat(value if value.count(":") == 2 else value + ":00")
        today = _in_zone(now, zone, text).date()
        moment = _localize(dt.datetime.combine(today, clock), zone, text)
        return Target(text, "time", time_us=to_us(moment), assumed_local=True)
    try:
        moment = dt.datetime.fromisoformat(value.replace(" ", "T", 1) if " " in value else value)
    except ValueError:
        raise ValueError(f"{text!r} is not a time or a transaction; use {FORMS}") from None
    assumed_local = moment.tzinfo is None
    if assumed_local:
        moment = _localize(moment, zone, text)
    return Target(text, "time", time_us=to_us(moment), assumed_local=assumed_local)


def _in_zone(now: dt.datetime, zone: dt.tzinfo | str | None, text: str) -> dt.datetime:
    if zone is None:
        raise NoZone(_no_zone_message(text))
    return now.astimezone() if zone == LOCAL else now.astimezone(zone)


def _localize(naive: dt.datetime, zone: dt.tzinfo | str | None, text: str) -> dt.datetime:
    """``naive`` read as a wall-clock time in ``zone``."""
    if zone is None:
        raise NoZone(_no_zone_message(text))
    # astimezone() on a naive datetime asks the C library (mktime), which knows the TZ rules,
    # daylight saving included; a fixed offset taken from "now" would be wrong across a change.
    return naive.astimezone() if zone == LOCAL else naive.replace(tzinfo=zone)


def _no_zone_message(text: str) -> str:
    return (f"{text!r} has no time zone, and the service does not guess whose local time it is: send an "
            f"absolute time (2026-11-22T10:15:00Z, or with an offset such as +02:00) or a relative one "
            f"(-15m); the auroratrack CLI reads a time without zone in the user's own zone and sends it so")


def _gtid(value: str, text: str) -> str:
    if _MARIADB_GTID.fullmatch(value):
        return value
    if _MYSQL_GTID.fullmatch(value):
        return value.lower()
    raise ValueError(f"{text!r}: a GTID is domain-server-sequence (0-1-345) or UUID:N")


def to_us(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1_000_000) if moment.microsecond == 0 else (
        int(moment.replace(microsecond=0).timestamp()) * 1_000_000 + moment.microsecond)


def format_both_clocks(time_us: int, zone: dt.tzinfo | str = LOCAL) -> str:
    """``2026-12-06 14:08:43Z (09:08:43 EST, local)``: UTC, and the same instant on the
    user's clock (seconds shown to the microsecond only when they have a fraction)."""
    moment = dt.datetime.fromtimestamp(time_us // 1_000_000, dt.UTC).replace(microsecond=time_us % 1_000_000)
    local = moment.astimezone() if zone == LOCAL else moment.astimezone(zone)
    fraction = f".{moment.microsecond:06d}" if moment.microsecond else ""
    utc_text = moment.strftime("%Y-%m-%d %H:%M:%S") + fraction + "Z"
    same_day = local.date() == moment.date()
    local_text = local.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S") + fraction
    return f"{utc_text} ({local_text} {local.tzname() or local.strftime('%z')}, local)"


def format_time_us(time_us: int | None) -> str:
    """ISO 8601 in UTC with microseconds, e.g. 2026-11-22T10:15:00.123456Z."""
    if time_us is None:
        return "-"
    moment = dt.datetime.fromtimestamp(time_us / 1_000_000, dt.UTC)
    moment = moment.replace(microsecond=time_us % 1_000_000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
