"""The mariadb (or mysql) command-line client as an adapter for the shared client script.

The whole script becomes one SQL text fed to one ``mariadb`` process, so every step runs on
the same connection, as with the other clients. ``--force`` keeps going after the failing step;
``--xml`` output delimits each result set (so a multi-statement query's results can be told
apart) and ``--binary-as-hex`` prints the BLOB as hex that is decoded back to bytes. Before each
step the script selects a marker row naming it, which is how results are attributed to steps;
errors (on stderr) are attributed by the line the client reports. Affected-row counts come from
``SELECT ROW_COUNT()`` right after the statement, the way a shell user would ask for them.
The client parses ``DELIMITER``, so the multi-statement query is sent as one ``COM_QUERY``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from tests.clients.clientscript import (
    BLOB_PARAM,
    ClientRun,
    Kind,
    Step,
    blob,
    prepare_values,
    sql_literal,
    sql_prepare_texts,
)
from tests.clients.pyclients import Target

MARKER_COLUMN = "auroratrack_step"
XSI_NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
ERROR_LINE = re.compile(r"^ERROR (\d+) \((\w+)\) at line (\d+)", re.MULTILINE)

def client_binary() -> str | None:
    """The command-line client on PATH: ``mariadb``, else ``mysql``."""
    return shutil.which("mariadb") or shutil.which("mysql")


@dataclass(frozen=True)
class CliScript:
    """The SQL text for the client and, per step, the line range its statements occupy."""

    text: str
    lines: dict[str, range]


def _with_params(sql: str, params: tuple[int | str, ...]) -> str:
    """``sql`` with each '?' replaced by its parameter as a literal (the BLOB as hex)."""
    for value in params:
        literal = "0x" + blob().hex() if value == BLOB_PARAM else sql_literal(value)
        sql = sql.replace("?", literal, 1)
    return sql


def _returns_rows(sql: str) -> bool:
    return sql.lstrip().split(None, 1)[0].upper() == "SELECT"


def _statements(step: Step) -> list[str]:
    """The client input lines of one step (without its marker)."""
    row_count = "SELECT ROW_COUNT() AS affected_rows;"
    kind, sql = step.kind, step.sql
    if kind in (Kind.EXEC, Kind.LOAD_LOCAL):
        return [f"{sql};", row_count]
    if kind in (Kind.QUERY, Kind.BLOB_READ, Kind.ERROR):
        return [f"{sql};"]
    if kind == Kind.BEGIN:
        return ["START TRANSACTION;"]
    if kind in (Kind.COMMIT, Kind.ROLLBACK):
        return [f"{kind.value.upper()};"]
    if kind == Kind.BLOB_WRITE:
        return [_with_params(sql, step.params) + ";", row_count]
    if kind == Kind.MULTI:
        return ["DELIMITER //", f"{sql}//", "DELIMITER ;"]
    if kind == Kind.PREPARED:
        values = prepare_values(sql, step.params)
        texts = sql_prepare_texts(len(step.params), lambda name: sql_literal(values[name]))
        lines = [f"{text};" for text in texts]
        if not _returns_rows(sql):
            lines.append(row_count)
        return [*lines, "DEALLOCATE PREPARE s;"]
    raise ValueError(f"unknown step kind {kind}")


def build_script(steps: list[Step]) -> CliScript:
    """One SQL text for the whole script, a marker row before each step."""
    out: list[str] = []
    lines: dict[str, range] = {}
    for step in steps:
        out.append(f"SELECT {sql_literal(step.name)} AS {MARKER_COLUMN};")
        body = _statements(step)
        lines[step.name] = range(len(out) + 1, len(out) + 1 + len(body))
        out.extend(body)
    return CliScript("\n".join(out) + "\n", lines)


@dataclass(frozen=True)
class ResultSet:
    """One result set of the client's output."""

    columns: tuple[str, ...]
    rows: list[tuple[str | None, ...]]


def parse_result_sets(stdout: str) -> list[ResultSet]:
    """Every result set of the client's ``--xml`` output, in order."""
    sets = []
    for document in stdout.split('<?xml version="1.0"?>'):
        if not document.strip():
            continue
        rows = list(ET.fromstring(document.strip()).iter("row"))
        columns = tuple(field.get("name", "") for field in rows[0]) if rows else ()
        sets.append(ResultSet(columns, [
            tuple(None if field.get(XSI_NIL) == "true" else (field.text or "") for field in row)
            for row in rows
        ]))
    return sets


def _results_by_step(stdout: str) -> dict[str, list[ResultSet]]:
    """The result sets that followed each step's marker row."""
    by_step: dict[str, list[ResultSet]] = {}
    current: list[ResultSet] | None = None
    for result in parse_result_sets(stdout):
        if result.columns == (MARKER_COLUMN,):
            current = by_step.setdefault(str(result.rows[0][0]), [])
        elif current is not None:
            current.append(result)
    return by_step


def _errors_by_step(stderr: str, script: CliScript) -> dict[str, str]:
    """'<errno>' per step whose statements the client reported an error for."""
    errors = {}
    for errno, _sqlstate, line in ERROR_LINE.findall(stderr):
        for name, span in script.lines.items():
            if int(line) in span:
                errors[name] = errno
    return errors


def observe(step: Step, results: list[ResultSet], error: str | None) -> Any:
    """The raw observation of one step from its result sets (or its error)."""
    kind = step.kind
    if kind == Kind.ERROR:
        return int(error) if error else None
    if error:
        return f"ERROR {error}"
    if kind == Kind.MULTI:
        return [result.rows for result in results]
    if kind in (Kind.BEGIN, Kind.COMMIT, Kind.ROLLBACK):
        return None
    if not results:
        return "<no result set>"
    if kind == Kind.QUERY or (kind == Kind.PREPARED and _returns_rows(step.sql)):
        return results[0].rows
    value = str(results[-1].rows[0][0]) if results[-1].rows else "<no row>"
    if kind == Kind.BLOB_READ:
        return bytes.fromhex(value.removeprefix("0x"))
    return int(value)  # the step's SELECT ROW_COUNT()


def run_cli(target: Target, steps: list[Step], timeout: float = 120.0,
            options: tuple[str, ...] = ()) -> ClientRun:
    """Run the script in one ``mariadb`` process through ``target`` (``options``: more
    command-line options, e.g. ``--compress``)."""
    binary = client_binary()
    if binary is None:
        raise FileNotFoundError("neither mariadb nor mysql is on PATH")
    script = build_script(steps)
    command = [
        binary, "--no-defaults", "--skip-ssl", f"-h{target.host}", f"-P{target.port}",
        f"-u{target.user}", "--local-infile=1", "--max-allowed-packet=256M", "--force",
        "--xml", "--binary-as-hex", *options, target.database,
    ]
    env = {**os.environ, "MYSQL_PWD": target.password}
    done = subprocess.run(command, input=script.text.encode(), capture_output=True,
                          timeout=timeout, env=env)
    stdout, stderr = done.stdout.decode(), done.stderr.decode("utf-8", "replace")
    results = _results_by_step(stdout)
    errors = _errors_by_step(stderr, script)
    observed = {s.name: observe(s, results.get(s.name, []), errors.get(s.name)) for s in steps}
    return ClientRun(observed, f"mariadb exit status {done.returncode}; stderr:\n{stderr}")
