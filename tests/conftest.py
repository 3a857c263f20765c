"""Session-wide fixtures: one real MySQL-compatible server for the whole test run.

Where the server comes from, in order: ``AURORATRACK_TEST_DSN`` (mysql://user:pw@host:port),
else the ``mysql`` service of docker-compose.yml through pytest-docker when a Docker engine
answers, else a private ``mariadbd``/``mysqld`` from PATH in a temporary directory. Tests isolate
themselves by database name (the ``database`` fixture); none of them mocks the server.

Every directory a test makes comes from pytest's ``tmp_path_factory`` (the private server's,
which needs a short socket path, is removed when it stops), so pytest removes them all when
the run passes (``tmp_path_retention_policy = "failed"`` in
pyproject.toml keeps them after a failure, to look at); tests/integration/test_suite_hygiene.py
checks that a run leaves nothing behind in the temp directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pymysql
import pytest

from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer
from proxy.serveradmin import UpstreamCredentials
from proxy.service import BackgroundService, ServeConfig


@dataclass
class ServerHandle:
    """How tests reach the session's server; ``private`` is set when we started it ourselves."""

    host: str
    port: int
    user: str
    password: str
    private: PrivateServer | None = None

    def connect(self, database: str | None = None, **kwargs) -> pymysql.Connection:
        kwargs.setdefault("autocommit", True)
        return pymysql.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            database=database, **kwargs,
        )

    def query(self, sql: str, args=None, database: str | None = None) -> list[tuple]:
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    @property
    def flavor(self) -> str:
        version = self.query("SELECT VERSION()")[0][0]
        return "mariadb" if "mariadb" in version.lower() else "mysql"


def _docker_engine_answers() -> bool:
    if os.environ.get("AURORATRACK_TEST_NO_DOCKER") or not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _wait_for_mysql(host: str, port: int, user: str, password: str) -> bool:
    try:
        pymysql.connect(host=host, port=port, user=user, password=password, connect_timeout=2).close()
        return True
    except pymysql.MySQLError:
        return False


@pytest.fixture(scope="session")
def mysql_server(request) -> Iterator[ServerHandle]:
    """The one real server of this test session."""
    dsn = os.environ.get("AURORATRACK_TEST_DSN")
    if dsn:
        url = urlparse(dsn)
        yield ServerHandle(url.hostname or "127.0.0.1", url.port or 3306,
                           url.username or "root", url.password or "")
        return
    if _docker_engine_answers():
        services = request.getfixturevalue("docker_services")
        ip = request.getfixturevalue("docker_ip")
        port = services.port_for("mysql", 3306)
        services.wait_until_responsive(
            timeout=180, pause=1, check=lambda: _wait_for_mysql(ip, port, "root", ADMIN_PASSWORD)
        )
        yield ServerHandle(ip, port, "root", ADMIN_PASSWORD)
        return
    # Not under pytest's basetemp: the server's socket path must stay under 108 bytes. Its
    # directory is removed with it (destroy).
    server = PrivateServer(Path(tempfile.mkdtemp(prefix="auroratrack-test-server-")))
    server.start()
    try:
        yield ServerHandle("127.0.0.1", server.port, ADMIN_USER, ADMIN_PASSWORD, private=server)
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def docker_compose_file(pytestconfig) -> str:
    return str(Path(pytestconfig.rootpath) / "docker-compose.yml")


@pytest.fixture
def database(mysql_server: ServerHandle, request) -> Iterator[str]:
    """A fresh, uniquely named database for one test, dropped afterwards."""
    name = f"t_{request.node.name[:30].strip('_')}_{uuid.uuid4().hex[:8]}".replace("[", "_")
    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    mysql_server.query(f"CREATE DATABASE `{name}`")
    try:
        yield name
    finally:
        mysql_server.query(f"DROP DATABASE IF EXISTS `{name}`")


def _proxy_config(server: ServerHandle, tmp_path_factory: pytest.TempPathFactory, **overrides) -> ServeConfig:
    settings = dict(
        upstream=UpstreamCredentials(server.host, server.port, server.user, server.password),
        listen_host="127.0.0.1",
        listen_port=0,
        data_dir=tmp_path_factory.mktemp("data") if "data_dir" not in overrides else None,
        capture=False,  # proxy tests; the changelog tests turn capture on
        admin_port=0,  # a free port: tests start many services
        backfill=False,  # the session's server holds every test's binlog; test_backfill turns it on
    )
    settings.update(overrides)
    return ServeConfig(**settings)


@pytest.fixture(scope="session")
def proxy(mysql_server: ServerHandle, tmp_path_factory) -> Iterator[BackgroundService]:
    """One auroratrack proxy for the session, in front of the session's server.

    Shared: a test that closes its gate must reopen it. Tests that change settings or pause for
    long use ``make_proxy`` instead."""
    service = BackgroundService(_proxy_config(mysql_server, tmp_path_factory)).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def make_proxy(mysql_server: ServerHandle, tmp_path_factory, tmp_path) -> Iterator:
    """Factory: ``make_proxy(hold_timeout=1.0, max_allowed_packet=...)`` starts a private proxy
    (any ``ServeConfig`` field) that is stopped when the test ends. It asks for ``tmp_path``
    only to be set up after it, hence torn down before it: a test that puts a proxy's data
    directory under ``tmp_path`` gets its proxy stopped before that directory is removed."""
    started: list[BackgroundService] = []

    def factory(**overrides) -> BackgroundService:
        service = BackgroundService(_proxy_config(mysql_server, tmp_path_factory, **overrides)).start()
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()
