# ruff: noqa: F811 - pytest fixtures imported from tls_support are parameters of the tests below
"""The client script of test_clients.py again, every client through a proxy whose server leg is TLS.

The same tests (imported, not copied) against this module's private server, which requires TLS
(``require_secure_transport=ON``), through a proxy with ``--upstream-tls verify-identity``.
PyMySQL, mysql-connector-python and SQLAlchemy (over PyMySQL) take the TLS the proxy offers on
their own leg; the mariadb CLI, the MariaDB connector and Node's mysql2 stay plaintext on theirs
unless asked (test_tls.py asks each of them, with verification).
"""

from __future__ import annotations

from tests.integration.test_clients import *  # noqa: F403 - the tests and their fixtures
from tests.integration.tls_support import pki, proxy_config, tls_server  # noqa: F401 (fixtures)
from tests.integration.tls_support import tls_module_proxy as proxy  # noqa: F401 (the session's, overridden)
from tests.integration.tls_support import tls_module_server as mysql_server  # noqa: F401

