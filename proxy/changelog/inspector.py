"""The inspector: reads the upstream server's settings and coordinates; never writes.

At start, ``inspect_server`` checks everything capture and backtrack depend on (DESIGN.md
decision 3) and refuses with one message per problem, naming the server and the exact statement
or setting that fixes it. It also tells the server's flavour and version, since MySQL 8.0, 8.4
and MariaDB name the same things differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pymysql

from proxy.serveradmin import UpstreamCredentials


@dataclass(frozen=True)
class ServerFlavor:
    """What kind of server this is, and its vocabulary."""

    name: str  # "mariadb" or "mysql"
    version: tuple[int, ...]
    version_text: str

    @property
    def is_mariadb(self) -> bool:
        return self.name == "mariadb"

    @property
    def binlog_status_statement(self) -> str:
        if not self.is_mariadb and self.version >= (8, 2):
            return "SHOW BINARY LOG STATUS"
        return "SHOW MASTER STATUS"

    @property
    def replicas_statement(self) -> str:
        if not self.is_mariadb and self.version >= (8, 0, 22):
            return "SHOW REPLICAS"
        return "SHOW SLAVE HOSTS"


@dataclass(frozen=True)
class Finding:
    setting: str
    ok: bool
    message: str
    fatal: bool = True


@dataclass
class InspectionReport:
    server: str
    flavor: ServerFlavor
    server_id: int
    findings: list[Finding] = field(default_factory=list)
    can_set_read_only: bool = False

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and f.fatal]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and not f.fatal]


class ServerNotReady(RuntimeError):
    """The server's settings do not allow faithful capture; the message lists every fix."""

    def __init__(self, report: InspectionReport):
        lines = [f"{report.server} is not ready for auroratrack:"]
        lines += [f"  - {finding.message}" for finding in report.problems]
        super().__init__("\n".join(lines))
        self.report = report


def parse_flavor(version_text: str) -> ServerFlavor:
    name = "mariadb" if "mariadb" in version_text.lower() else "mysql"
    numbers = version_text.split("-")[0].split(".")
    version = tuple(int(n) for n in numbers if n.isdigit())
    return ServerFlavor(name, version, version_text)


def inspect_server(credentials: UpstreamCredentials, streamer_server_id: int,
                   window_s: float | None) -> InspectionReport:
    """Check the server; the report's ``problems`` must be empty before capture starts."""
    server = f"{credentials.host}:{credentials.port}"
    conn = credentials.connect(role="inspector")
    try:
        with conn.cursor() as cur:
            settings = _variables(cur)
            flavor = parse_flavor(settings.get("version", ""))
            report = InspectionReport(server, flavor, int(settings.get("server_id", 0)))
            for finding in _setting_findings(server, flavor, settings):
                report.findings.append(finding)
            report.findings.append(_retention_finding(server, flavor, settings, window_s))
            report.findings.append(_server_id_finding(cur, server, flavor, settings, streamer_server_id))
            grants = _grants(cur)
            report.findings.extend(_privilege_findings(server, flavor, grants, credentials.user))
            report.can_set_read_only = _has_any(grants, ("SUPER", "READ_ONLY ADMIN", "SYSTEM_VARIABLES_ADMIN"))
    finally:
        conn.close()
    return report


def require_ready(credentials: UpstreamCredentials, streamer_server_id: int,
                  window_s: float | None) -> InspectionReport:
    report = inspect_server(credentials, streamer_server_id, window_s)
    if report.problems:
        raise ServerNotReady(report)
    return report


# -- settings ---------------------------------------------------------------------------------------------
_WANTED = (
    "version", "server_id", "log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata",
    "log_bin_compress", "binlog_transaction_compression", "binlog_row_value_options",
    "binlog_expire_logs_seconds", "expire_logs_days", "gtid_mode",
)


def _variables(cur) -> dict[str, str]:
    names = ",".join(f"'{n}'" for n in _WANTED)
    cur.execute(f"/* auroratrack inspector */ SHOW GLOBAL VARIABLES WHERE Variable_name IN ({names})")
    return {name.lower(): str(value) for name, value in cur.fetchall()}


def _setting_findings(server: str, flavor: ServerFlavor, s: dict[str, str]) -> list[Finding]:
    findings = [
        _expect(server, s, "log_bin", "ON", "binlog off: nothing to capture",
                "start the server with --log-bin (it cannot be turned on at run time)"),
        _expect(server, s, "binlog_format", "ROW", "backtrack needs row images",
                "SET GLOBAL binlog_format='ROW' (and binlog_format=ROW in the server's config)"),
        _expect(server, s, "binlog_row_image", "FULL", "backtrack needs FULL before-images",
                "SET GLOBAL binlog_row_image='FULL' (and in the server's config)"),
        _expect(server, s, "binlog_row_metadata", "FULL",
                "capture needs column names, signedness and charsets in every table map",
                "SET GLOBAL binlog_row_metadata='FULL' (and in the server's config)"),
    ]
    if flavor.is_mariadb:
        findings.append(_expect(server, s, "log_bin_compress", "OFF",
                                "compressed row events cannot be captured",
                                "SET GLOBAL log_bin_compress=OFF"))
    else:
        # Both are captured (binlogfile.payload_events decompresses a transaction; the decoder
        # applies partial JSON diffs to the FULL before-image): shown, never refused.
        compression = s.get("binlog_transaction_compression", "OFF")
        findings.append(Finding("binlog_transaction_compression", True,
                                f"binlog_transaction_compression={compression}"
                                + (" (decompressed at capture)" if compression.upper() in ("ON", "1") else "")))
        options = s.get("binlog_row_value_options", "")
        findings.append(Finding("binlog_row_value_options", True,
                                f"binlog_row_value_options={options!r}"
                                + (" (JSON diffs applied to the FULL before-image)" if options else "")))
    return findings


def _expect(server: str, s: dict[str, str], name: str, wanted: str, why: str, fix: str) -> Finding:
    value = s.get(name)
    if value is None:
        return Finding(name, False, f"{name} is not known on {server} (server too old?); {why}")
    ok = value.upper() in (wanted, "1" if wanted == "ON" else wanted)
    return Finding(name, ok, f"{name} is {value} on {server}; {why}: {fix}" if not ok else f"{name}={value}")


def _retention_finding(server: str, flavor: ServerFlavor, s: dict[str, str],
                       window_s: float | None) -> Finding:
    seconds = int(float(s.get("binlog_expire_logs_seconds", "0") or 0))
    if not seconds:
        seconds = int(float(s.get("expire_logs_days", "0") or 0) * 86400)
    if not seconds or not window_s or seconds >= window_s:
        return Finding("binlog retention", True, f"binlog retention {seconds or 'unlimited'} s")
    return Finding(
        "binlog retention", False,
        f"binlogs expire after {seconds} s on {server}, shorter than the {window_s:.0f} s backtrack window: "
        f"an outage of auroratrack longer than that loses changes. "
        f"SET GLOBAL binlog_expire_logs_seconds={int(window_s)}",
    )


def _server_id_finding(cur, server: str, flavor: ServerFlavor, s: dict[str, str], ours: int) -> Finding:
    if int(s.get("server_id", 0)) == ours:
        return Finding("server_id", False, f"the streamer's server_id {ours} equals the server's own on "
                       f"{server}: choose another with --streamer-server-id")
    try:
        cur.execute(f"/* auroratrack inspector */ {flavor.replicas_statement}")
        taken = {int(row[0]) for row in cur.fetchall()}
    except pymysql.MySQLError:
        taken = set()
    if ours in taken:
        return Finding("server_id", False, f"a replica with server_id {ours} is already connected to {server}; "
                       "two replicas with one id kick each other off: choose another with --streamer-server-id")
    return Finding("server_id", True, f"streamer server_id {ours}")


# -- privileges -------------------------------------------------------------------------------------------
def _grants(cur) -> str:
    cur.execute("/* auroratrack inspector */ SHOW GRANTS")
    return "\n".join(row[0] for row in cur.fetchall()).upper()


def _has_any(grants: str, privileges: tuple[str, ...]) -> bool:
    global_lines = [line for line in grants.splitlines() if " ON *.* " in line]
    return any("ALL PRIVILEGES" in line or any(p in line for p in privileges) for line in global_lines)


def _privilege_findings(server: str, flavor: ServerFlavor, grants: str, user: str) -> list[Finding]:
    needed = [
        ("replication", ("REPLICATION SLAVE", "REPLICATION REPLICA"), "GRANT REPLICATION SLAVE ON *.*"),
        ("binlog status", ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"),
         "GRANT BINLOG MONITOR ON *.*" if flavor.is_mariadb else "GRANT REPLICATION CLIENT ON *.*"),
        ("read and write rows", ("SELECT, INSERT, UPDATE, DELETE",), "GRANT SELECT, INSERT, UPDATE, DELETE ON *.*"),
    ]
    findings = []
    for what, privileges, grant in needed:
        ok = _has_any(grants, privileges) or (what == "read and write rows" and _has_dml(grants))
        findings.append(Finding(f"privilege: {what}", ok,
                                f"{user} on {server} lacks the privilege for {what}: {grant} TO {user}"
                                if not ok else f"{what}: granted"))
    return findings


def _has_dml(grants: str) -> bool:
    for line in grants.splitlines():
        if " ON *.* " in line and all(p in line for p in ("SELECT", "INSERT", "UPDATE", "DELETE")):
            return True
    return False
