"""The pure parts of the admin API and its CLI: request validation, status counting, time and
address formats, progress lines and the exit-code rule. No server, no sockets."""

from __future__ import annotations

import re
from dataclasses import dataclass

import click
import pytest

from proxy.admin import BadRequest, iso_utc, parse_backtrack_fields, session_counts
from proxy.adminclient import base_url
from proxy.cli import resolve_to
from proxy.clioutput import ProgressLines, blocking_conflicts, format_bytes, succeeded


def test_backtrack_fields_are_checked():
    assert parse_backtrack_fields({"to": "-15m", "dry_run": True, "drain_timeout": 2}) == {
        "to": "-15m", "dry_run": True, "drain_timeout": 2}
    for body, fragment in (([], "JSON object"), ({}, "'to' is required"), ({"to": "  "}, "'to' is required"),
                           ({"to": 5}, "'to' is required"), ({"to": "-1m", "x": 1}, "unknown field(s) x"),
                           ({"to": "-1m", "force": 1}, "'force' must be bool"),
                           ({"to": "-1m", "drain_timeout": True}, "'drain_timeout' must be int or float"),
                           ({"to": "-1m", "drain_timeout": 0}, "positive")):
        with pytest.raises(BadRequest, match=re.escape(fragment)):
            parse_backtrack_fields(body)


@dataclass
class Info:
    state: str
    in_transaction: bool


def test_session_counts():
    infos = [Info("idle", False), Info("idle", True), Info("busy", True), Info("held", False)]
    assert session_counts(infos) == {"total": 4, "idle": 2, "busy": 1, "held": 1, "connecting": 0,
                                     "in_transaction": 2}
    assert session_counts([])["total"] == 0


def test_iso_utc_keeps_microseconds():
    assert iso_utc(1_795_320_652_650_278) == "2026-11-22T04:10:52.650278Z"
    assert iso_utc(0) == "1970-01-01T00:00:00.000000Z"
    assert iso_utc(None) is None


def test_base_url_for_wildcards_and_ipv6():
    assert base_url("127.0.0.1", 3308) == "http://127.0.0.1:3308"
    assert base_url("0.0.0.0", 3308) == "http://127.0.0.1:3308"
    assert base_url("::", 9) == "http://[::1]:9"
    assert base_url("::1", 9) == "http://[::1]:9"


def test_relative_targets_are_fixed_before_the_prompt():
    sent, described = resolve_to("-15m")
    assert sent.endswith("Z") and sent[:10] in described and "local)" in described  # UTC and local
    assert resolve_to("lsn:42") == ("lsn:42", "just before lsn:42")
    assert resolve_to("2026-11-22T10:15:00+01:00")[0] == "2026-11-22T09:15:00.000000Z"  # every time absolute
    with pytest.raises(click.BadParameter):
        resolve_to("yesterday-ish")


def test_progress_lines_show_each_status_and_step_once():
    progress = ProgressLines()
    record = {"id": "b1", "status": "pending", "steps": []}
    assert progress.new_lines(record) == ["b1: pending"]
    record = {"id": "b1", "status": "applying", "steps": [{"name": "pause", "duration_s": 0.0},
                                                          {"name": "drain", "duration_s": None}]}
    assert progress.new_lines(record) == ["b1: applying", "  pause 0.000 s", "  drain ..."]
    assert progress.new_lines(record) == []
    record = {"id": "b1", "status": "completed", "steps": [{"name": "pause", "duration_s": 0.0},
                                                           {"name": "drain", "duration_s": 0.25}]}
    assert progress.new_lines(record) == ["  drain 0.250 s", "b1: completed"]


def test_exit_code_rule():
    assert succeeded({"status": "completed"})
    assert not succeeded({"status": "failed"})
    conflict = {"kind": "drift", "table": "db.t", "key": "1", "reason": "changed outside the log"}
    dry = {"status": "completed", "dry_run": True, "plan": {"conflicts": [conflict]}}
    assert blocking_conflicts(dry) == [conflict] and not succeeded(dry)
    assert succeeded({**dry, "force": True})
    assert succeeded({**dry, "plan": {"conflicts": []}})


def test_format_bytes():
    assert format_bytes(845) == "845 B"
    assert format_bytes(457_830) == "447.1 KiB"
    assert format_bytes(None) == "-"
