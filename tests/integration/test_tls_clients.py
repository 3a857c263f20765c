# ruff: noqa: F811 - pytest fixtures imported from tls_support are parameters of the tests below
"""The client script of test_clients.py again, every client through a proxy whose server leg is TLS.

The same tests (imported, not copied) against this module's private server, which requires TLS
(``require_secure_transport=ON``), through a proxy with ``--upstream-tls verify-identity``.
PyMySQL, mysql-connector-python and SQLAlchemy (over PyMySQL) take the TLS the proxy offers on
their own leg; the mariadb CLI, the MariaDB connector and Node's mysql2 stay plaintext on theirs
unless asked (test_tls.py asks each of them, with verification).
"""

from __future__ import annotations

import pytest

from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER
from proxy.service import BackgroundService
from tests.conftest import ServerHandle
from tests.integration.test_clients import *  # noqa: F403 - the tests and their fixtures
from tests.integration.tls_support import pki, proxy_config, tls_server  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def mysql_server(tls_server) -> ServerHandle:  # overrides the session's server for this module
    return ServerHandle("127.0.0.1", tls_server.port, ADMIN_USER, ADMIN_PASSWORD, private=tls_server)


@pytest.fixture(scope="module")
def proxy(tls_server, pki, tmp_path_factory):  # overrides the session's proxy for this module
    service = BackgroundService(proxy_config(tls_server, pki, tmp_path_factory.mktemp("tls-proxy"))).start()
    yield service
    service.stop()
