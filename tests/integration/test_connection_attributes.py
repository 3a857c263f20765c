"""Every connection auroratrack opens tells the server who opened it.

Read back from ``performance_schema.session_connect_attrs`` of a private server started with
performance_schema on (the session's server runs without it): a running serve with capture
keeps its control, replication, capture-control and position-clock connections open, each
with ``program_name=auroratrack`` and its ``auroratrack_role``; a backtrack's apply connection
says ``apply``; a client relayed through the proxy keeps its own attributes (none of ours).
"""

from __future__ import annotations

import time

import pymysql
import pytest

from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer, find_server_binary
from proxy.serveradmin import ROLES, UpstreamCredentials
from proxy.service import BackgroundService, ServeConfig

ATTRS_BY_SESSION = (
    "SELECT PROCESSLIST_ID, ATTR_NAME, ATTR_VALUE FROM performance_schema.session_connect_attrs "
    "WHERE ATTR_NAME IN ('program_name', 'auroratrack_role', '_client_name')"
)


@pytest.fixture(scope="module")
def ps_server(tmp_path_factory) -> PrivateServer:
    try:
        find_server_binary()
    except RuntimeError as exc:
        pytest.skip(f"needs a server binary of its own: {exc}")
    # performance_schema sizes itself from max_connections: a small one keeps it small.
    server = PrivateServer(tmp_path_factory.mktemp("connattrs"),
                           extra_args=("--performance-schema=ON", "--max-connections=100"))
    server.start()
    yield server
    server.destroy()


def attributes(server: PrivateServer) -> dict[int, dict[str, str]]:
    """Session id -> its connection attributes (those we look at)."""
    found: dict[int, dict[str, str]] = {}
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(ATTRS_BY_SESSION)
        for session, name, value in cur.fetchall():
            found.setdefault(int(session), {})[name] = value
    return found


def test_every_connection_of_ours_says_program_and_role(ps_server, tmp_path):
    config = ServeConfig(upstream=UpstreamCredentials("127.0.0.1", ps_server.port, ADMIN_USER, ADMIN_PASSWORD),
                         listen_port=0, admin_port=0, data_dir=tmp_path / "data", capture=True)
    svc = BackgroundService(config).start()
    try:
        client = pymysql.connect(host="127.0.0.1", port=svc.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                 program_name="some_app")
        with client.cursor() as cur:  # makes the streamer ask about a table map (capture_control)
            cur.execute("CREATE DATABASE IF NOT EXISTS ca")
            cur.execute("CREATE TABLE IF NOT EXISTS ca.t (id INT PRIMARY KEY)")
            cur.execute("INSERT INTO ca.t VALUES (1)")
            cur.execute("SELECT CONNECTION_ID()")
            client_session = cur.fetchone()[0]
        apply = svc.service.backtracker._apply_connection()
        with apply.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            apply_session = cur.fetchone()[0]

        expected = {"control", "capture", "capture_control", "position_clock", "apply"}
        deadline = time.monotonic() + 20  # the position clock opens its connection at its first sample
        while True:
            seen = attributes(ps_server)
            ours = {session: attrs for session, attrs in seen.items() if attrs.get("program_name") == "auroratrack"}
            roles = sorted(attrs.get("auroratrack_role") for attrs in ours.values())
            if expected <= set(roles) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert expected <= set(roles), roles
        assert set(roles) <= ROLES.keys()
        assert ours[apply_session]["auroratrack_role"] == "apply"
        # the relayed client's handshake is its own: its attributes, not ours
        assert seen[client_session].get("program_name") == "some_app"
        assert "auroratrack_role" not in seen[client_session]
        apply.close()
        client.close()
    finally:
        svc.stop()
