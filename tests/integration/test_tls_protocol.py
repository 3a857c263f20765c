# ruff: noqa: F811 - pytest fixtures imported from tls_support are parameters of the tests below
"""The protocol coverage of test_protocol.py again, with TLS on both legs of the proxy.

The same tests (imported, not copied) run against this module's private server, which requires
TLS (``require_secure_transport=ON``), through a proxy with ``--upstream-tls verify-identity``.
Drivers that use TLS when it is offered (PyMySQL, mysql-connector-python) get it on their leg;
the hand-written raw client and the MariaDB connector stay plaintext on theirs, so both client
leg kinds meet the encrypted server leg.
"""

from __future__ import annotations

import pytest

from proxy.service import BackgroundService
from tests.integration.test_protocol import *  # noqa: F403 - the tests and their fixtures
from tests.integration.tls_support import pki, proxy_config, tls_server  # noqa: F401 (fixtures)
from tests.integration.tls_support import tls_module_proxy as proxy  # noqa: F401 (the session's, overridden)
from tests.integration.tls_support import tls_module_server as mysql_server  # noqa: F401


@pytest.fixture
def make_proxy(tls_server, pki, tmp_path):
    started = []

    def factory(**overrides) -> BackgroundService:
        service = BackgroundService(proxy_config(tls_server, pki, tmp_path / f"p{len(started)}", **overrides)).start()
        started.append(service)
        return service

    yield factory
    for service in started:
        service.stop()
