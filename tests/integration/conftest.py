"""Fixtures shared by the integration tests (the server and the proxy come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from proxy.sandbox import PrivateServer, find_server_binary
from tests.integration.backtrack_support import capturing_service, wait_captured


@pytest.fixture
def svc(tmp_path, make_proxy, mysql_server):
    """A service with capture on; the streamer has taken its start position. Each test (and each
    hypothesis example of a test) keeps to a database of its own. ``tmp_path`` comes first:
    fixtures are torn down in reverse, so the service stops before its data directory is removed
    (the other way round its streamer met a deleted store on the way out)."""
    service = capturing_service(make_proxy, tmp_path / "data")
    wait_captured(service, mysql_server)
    return service


@pytest.fixture(scope="module")
def own_server(tmp_path_factory, request) -> PrivateServer:
    """A private server for one module's tests that restart it, purge its binlogs or need it to
    themselves (the session's server is shared)."""
    try:
        find_server_binary()
    except RuntimeError as exc:
        pytest.skip(f"needs a server binary of its own: {exc}")
    server = PrivateServer(tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1]))
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def twin(mysql_server, database):
    """Two databases to build the same way, one used straight on the server and one through the
    proxy, for comparing what a client sees. Their names have the same length: they are
    replaced in length-prefixed values of the answers."""
    names = (database[:50] + "_a", database[:50] + "_b")
    for name in names:
        mysql_server.query(f"CREATE DATABASE `{name}`")
    try:
        yield names
    finally:
        for name in names:
            mysql_server.query(f"DROP DATABASE IF EXISTS `{name}`")
