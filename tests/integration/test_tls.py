# ruff: noqa: F811 - pytest fixtures imported from tls_support are parameters of the tests below
"""TLS on both legs of the proxy, against a real MariaDB that requires secure transport.

One private server for this module, started with its own CA-signed certificate and
``require_secure_transport=ON``; auroratrack in front of it with ``--upstream-tls
verify-identity`` and a certificate of its own from the same test CA. Real clients connect
through it with certificate and host verification and must see TLS on their leg (their socket's
cipher) and on the proxy's leg (the server's ``Ssl_cipher`` for their session).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymysql
import pytest

from proxy.gate import BACKTRACKING_ERRNO
from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer
from proxy.serveradmin import UpstreamCredentials
from proxy.service import BackgroundService
from proxy.tls import certificate_fingerprint
from proxy.wire import make_packets, read_header
from tests.conftest import ServerHandle
from tests.integration import rawmysql as raw
from tests.integration.backtrack_support import backtrack, fingerprint, now_iso, wait_captured
from tests.integration.test_backtrack_crash import admin_client
from tests.integration.tls_support import pki, tls_server  # noqa: F401 (module fixtures)
from tests.integration.tls_support import proxy_config as _config

NODE_DIR = Path(__file__).resolve().parents[1] / "clients" / "node"


@pytest.fixture(scope="module")
def tls_proxy(tls_server, pki, tmp_path_factory):
    service = BackgroundService(_config(tls_server, pki, tmp_path_factory.mktemp("tls-proxy"),
                                        tls_handshake_timeout=2.0)).start()
    yield service
    service.stop()


def _server_cipher(cursor) -> str:
    cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    return cursor.fetchone()[1]


def test_server_refuses_plaintext(tls_server):
    """The premise: this server really refuses a client without TLS."""
    with pytest.raises(pymysql.OperationalError) as caught:
        pymysql.connect(host="127.0.0.1", port=tls_server.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                        ssl_disabled=True)
    assert caught.value.args[0] in (3159, 1045), caught.value.args  # MariaDB: access denied


def test_pymysql_verifies_the_proxy_and_both_legs_are_tls(tls_proxy, pki):
    conn = pymysql.connect(host="127.0.0.1", port=tls_proxy.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                           ssl_ca=str(pki["ca"].path), ssl_verify_cert=True, ssl_verify_identity=True)
    with conn, conn.cursor() as cur:
        assert conn._sock.version() in ("TLSv1.2", "TLSv1.3")  # the client's leg
        assert _server_cipher(cur)  # the proxy's leg, as the server sees it
        cur.execute("SELECT CURRENT_USER(), 1 + 1")
        assert cur.fetchone() == (f"{ADMIN_USER}@%", 2)


@pytest.mark.parametrize("use_pure", [True, False], ids=["pure", "c-ext"])
def test_mysql_connector_verifies_the_proxy(tls_proxy, pki, use_pure):
    mysql_connector = pytest.importorskip("mysql.connector")
    if not use_pure and not mysql_connector.HAVE_CEXT:
        pytest.skip("mysql-connector-python's C extension is not installed")
    conn = mysql_connector.connect(host="127.0.0.1", port=tls_proxy.port, user=ADMIN_USER,
                                   password=ADMIN_PASSWORD, use_pure=use_pure, ssl_ca=str(pki["ca"].path),
                                   ssl_verify_cert=True, ssl_verify_identity=True)
    try:
        cur = conn.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1]
        cur.execute("SELECT 40 + 2")
        assert cur.fetchone() == (42,)
    finally:
        conn.close()


def test_mariadb_connector_verifies_the_proxy(tls_proxy, pki):
    mariadb = pytest.importorskip("mariadb")
    conn = mariadb.connect(host="127.0.0.1", port=tls_proxy.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                           ssl_ca=str(pki["ca"].path), ssl_verify_cert=True)
    try:
        cur = conn.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1]
        assert conn.server_version_info  # the relayed greeting reached the client
    finally:
        conn.close()


def test_mariadb_cli_verifies_the_proxy(tls_proxy, pki):
    cli = shutil.which("mariadb") or shutil.which("mysql")
    if cli is None:
        pytest.skip("no mariadb/mysql command-line client on PATH")
    done = subprocess.run(
        [cli, "--no-defaults", "-h", "127.0.0.1", "-P", str(tls_proxy.port), "-u", ADMIN_USER,
         f"-p{ADMIN_PASSWORD}", "--ssl", "--ssl-verify-server-cert", f"--ssl-ca={pki['ca'].path}", "-N", "-B",
         "-e", "SHOW SESSION STATUS LIKE 'Ssl_cipher'; SELECT CONNECTION_ID() > 0"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    cipher_line, answer = done.stdout.strip().splitlines()
    assert cipher_line.split("\t")[1]
    assert answer == "1"


NODE_SCRIPT = """
const mysql = require('mysql2/promise');
const fs = require('fs');
(async () => {
  const conn = await mysql.createConnection({host: '127.0.0.1', port: +process.argv[2], user: process.argv[3],
    password: process.argv[4], ssl: {ca: fs.readFileSync(process.argv[5]), rejectUnauthorized: true}});
  const [rows] = await conn.query("SHOW SESSION STATUS LIKE 'Ssl_cipher'");
  const [answer] = await conn.execute('SELECT ? + 1 AS n', [41]);
  console.log(JSON.stringify({cipher: rows[0].Value, n: answer[0].n, tls: conn.connection.stream.getProtocol()}));
  await conn.end();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_node_mysql2_verifies_the_proxy(tls_proxy, pki, tmp_path):
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "mysql2").is_dir():
        pytest.skip("node or mysql2 is missing (make test installs mysql2)")
    script = NODE_DIR / f"tls_check_{os.getpid()}.js"
    script.write_text(NODE_SCRIPT)
    try:
        done = subprocess.run(["node", str(script), str(tls_proxy.port), ADMIN_USER, ADMIN_PASSWORD,
                               str(pki["ca"].path)], capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
    finally:
        script.unlink()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["cipher"] and seen["n"] == 42 and seen["tls"].startswith("TLSv1.")


def test_plaintext_client_refused_when_tls_required(tls_server, pki, tmp_path):
    service = BackgroundService(_config(tls_server, pki, tmp_path, client_tls="required")).start()
    try:
        with pytest.raises(pymysql.OperationalError) as caught:
            pymysql.connect(host="127.0.0.1", port=service.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                            ssl_disabled=True)
        assert caught.value.args[0] == 3159
        assert "insecure transport" in caught.value.args[1]
        with pymysql.connect(host="127.0.0.1", port=service.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                             ssl_ca=str(pki["ca"].path)) as conn, conn.cursor() as cur:
            assert _server_cipher(cur)
    finally:
        service.stop()


def test_plaintext_client_through_tls_upstream(tls_proxy):
    """A client without TLS still gets in: the proxy's own leg to the server is encrypted."""
    with pymysql.connect(host="127.0.0.1", port=tls_proxy.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                         ssl_disabled=True) as conn, conn.cursor() as cur:
        assert conn._sock is not None and not hasattr(conn._sock, "cipher")
        assert _server_cipher(cur)


def _ssl_request_bytes() -> bytes:
    caps = 0x0000_8000 | 0x0000_0200 | 0x0000_0800 | 0x0008_0000 | 0x1  # SECURE, 4.1, SSL, PLUGIN_AUTH, LONG_PW
    return make_packets(caps.to_bytes(4, "little") + (1 << 24).to_bytes(4, "little") + b"\x21" + bytes(23), 1)


def _read_greeting(sock: socket.socket) -> bytes:
    header = sock.recv(4, socket.MSG_WAITALL)
    length, _ = read_header(header)
    return sock.recv(length, socket.MSG_WAITALL)


def _still_serves(port: int, pki) -> None:
    with pymysql.connect(host="127.0.0.1", port=port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                         ssl_ca=str(pki["ca"].path)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_garbage_after_ssl_request_ends_only_that_session(tls_proxy, pki):
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as sock:
        _read_greeting(sock)
        sock.sendall(_ssl_request_bytes() + b"this is not a TLS ClientHello" * 20)
        assert sock.recv(4096) == b""  # closed (no TLS alert parsing needed: the bytes were not TLS)
    _still_serves(tls_proxy.port, pki)


def test_client_that_never_finishes_the_handshake_is_bounded(tls_proxy, pki):
    """The module's proxy has a 2 s TLS handshake timeout."""
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=20) as sock:
        _read_greeting(sock)
        sock.sendall(_ssl_request_bytes())  # ... and then nothing
        started = time.monotonic()
        assert sock.recv(4096) == b""
        waited = time.monotonic() - started
    assert 1.0 < waited < 15.0
    _still_serves(tls_proxy.port, pki)


def test_self_signed_certificate_made_at_first_start(tls_server, pki, tmp_path):
    config = _config(tls_server, pki, tmp_path, tls_cert=None, tls_key=None)
    service = BackgroundService(config).start()
    try:
        cert, key = config.data_dir / "tls-cert.pem", config.data_dir / "tls-key.pem"
        assert key.stat().st_mode & 0o777 == 0o600
        fingerprint = certificate_fingerprint(cert)
        assert service.service.tls.status()["client"]["sha256_fingerprint"] == fingerprint
        context = ssl.create_default_context(cafile=str(cert))  # the self-signed file is its own CA
        with pymysql.connect(host="127.0.0.1", port=service.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                             ssl=context) as conn, conn.cursor() as cur:
            der = conn._sock.getpeercert(binary_form=True)
            assert ssl.DER_cert_to_PEM_cert(der).strip() == cert.read_text().strip()
            assert _server_cipher(cur)
    finally:
        service.stop()


def test_reload_swaps_the_certificate_without_dropping_sessions(tls_server, pki, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki["proxy"].cert, cert)
    shutil.copy(pki["proxy"].key, key)
    service = BackgroundService(_config(tls_server, pki, tmp_path, tls_cert=cert, tls_key=key)).start()
    try:
        before = pymysql.connect(host="127.0.0.1", port=service.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                 ssl_ca=str(pki["ca"].path))
        renewed = pki["ca"].issue("proxy-renewed", dns=("localhost",), ips=("127.0.0.1",))
        shutil.copy(renewed.cert, cert)
        shutil.copy(renewed.key, key)
        service.call_soon(service.service.reload_tls)
        with before.cursor() as cur:  # the session from before goes on
            cur.execute("SELECT 7")
            assert cur.fetchone() == (7,)
        with pymysql.connect(host="127.0.0.1", port=service.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                             ssl_ca=str(pki["ca"].path)) as after:
            der = after._sock.getpeercert(binary_form=True)
            assert ssl.DER_cert_to_PEM_cert(der).strip() == renewed.cert.read_text().strip()
        before.close()
    finally:
        service.stop()


@pytest.mark.parametrize("case", ["unknown-ca", "wrong-host"])
def test_upstream_certificate_that_fails_verification_stops_serve(tls_server, pki, tmp_path, case):
    ca, host = (str(pki["other_ca"].path), "127.0.0.1") if case == "unknown-ca" else (str(pki["ca"].path), "localhost")
    upstream = UpstreamCredentials(host, tls_server.port, ADMIN_USER, ADMIN_PASSWORD,
                                   tls_mode="verify-identity", tls_ca=ca)
    service = BackgroundService(_config(tls_server, pki, tmp_path, upstream=upstream))
    with pytest.raises(RuntimeError, match="failed verification") as caught:
        service.start()
    service.stop()
    expected = ("unable to get local issuer certificate", "self-signed certificate in certificate chain") \
        if case == "unknown-ca" else ("Hostname mismatch",)
    assert any(reason in str(caught.value) for reason in expected), caught.value


def _tls_client(service: BackgroundService, pki, database: str | None = None) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=service.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                           database=database, autocommit=True, ssl_ca=str(pki["ca"].path),
                           ssl_verify_cert=True, ssl_verify_identity=True)


def test_backtrack_pauses_drops_and_resumes_tls_clients(tls_server, pki, tmp_path):
    """Capture, the control connection and the apply all reach a server that refuses plaintext;
    clients on TLS are paused, dropped, and get back in."""
    server = ServerHandle("127.0.0.1", tls_server.port, ADMIN_USER, ADMIN_PASSWORD, private=tls_server)
    service = BackgroundService(_config(tls_server, pki, tmp_path, capture=True, backtrack_window_s=3600)).start()
    database = f"tls_bt_{uuid.uuid4().hex[:8]}"
    server.query(f"CREATE DATABASE {database}")
    try:
        client = _tls_client(service, pki, database)
        with client.cursor() as cur:
            cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(40))")
            cur.executemany("INSERT INTO orders VALUES (%s, %s)", [(i, f"order {i}") for i in range(200)])
        wait_captured(service, server)
        before = fingerprint(server, database)
        moment = now_iso()
        with client.cursor() as cur:
            cur.execute("DELETE FROM orders")
        record = backtrack(service, moment)
        assert record.status == "completed", record.error
        assert [s["name"] for s in record.steps][:5] == ["plan", "prepare", "pause", "drain", "drop"]
        assert fingerprint(server, database) == before
        with pytest.raises(pymysql.err.OperationalError):  # dropped
            client.cursor().execute("SELECT 1")
        with _tls_client(service, pki, database) as again, again.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM orders")
            assert cur.fetchone() == (200,)
            assert _server_cipher(cur)
    finally:
        service.stop()
        server.query(f"DROP DATABASE IF EXISTS {database}")


def test_held_tls_client_gets_the_backtracking_error_then_goes_on(tls_server, pki, tmp_path):
    service = BackgroundService(_config(tls_server, pki, tmp_path, hold_timeout=1.0)).start()
    try:
        conn = _tls_client(service, pki)
        service.call_soon(service.gate.pause)
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as caught:
            conn.cursor().execute("SELECT 1")
        assert caught.value.args[0] == BACKTRACKING_ERRNO
        assert 1.0 <= time.monotonic() - started < 10.0
        service.call_soon(service.gate.resume)
        with conn.cursor() as cur:
            cur.execute("SELECT 2")
            assert cur.fetchone() == (2,)
        conn.close()
    finally:
        service.stop()


def test_expired_upstream_certificate_stops_serve(pki, tmp_path):
    expired = pki["ca"].issue("expired-server", dns=(), ips=("127.0.0.1",), expired=True)
    server = PrivateServer(tmp_path / "expired-server",
                           extra_args=(f"--ssl-cert={expired.cert}", f"--ssl-key={expired.key}"))
    server.start()
    try:
        upstream = UpstreamCredentials("127.0.0.1", server.port, ADMIN_USER, ADMIN_PASSWORD,
                                       tls_mode="verify-ca", tls_ca=str(pki["ca"].path))
        service = BackgroundService(_config(server, pki, tmp_path, upstream=upstream))
        with pytest.raises(RuntimeError, match="certificate has expired") as caught:
            service.start()
        service.stop()
        assert "failed verification (--upstream-tls verify-ca" in str(caught.value)
    finally:
        server.destroy()


def test_account_requiring_a_client_certificate_gets_a_clear_error(tls_proxy, tls_server, pki):
    name = f"x509_{uuid.uuid4().hex[:6]}"
    with tls_server.connect() as admin, admin.cursor() as cur:
        cur.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'pw' REQUIRE X509")
    try:
        client = pki["ca"].issue(f"client-{name}")
        with pytest.raises(pymysql.OperationalError) as caught:
            pymysql.connect(host="127.0.0.1", port=tls_proxy.port, user=name, password="pw",
                            ssl_ca=str(pki["ca"].path), ssl_cert=str(client.cert), ssl_key=str(client.key))
        assert caught.value.args[0] == 1045
        assert "REQUIRE X509" in caught.value.args[1] and "auroratrack terminates TLS" in caught.value.args[1]
    finally:
        with tls_server.connect() as admin, admin.cursor() as cur:
            cur.execute(f"DROP USER '{name}'@'%'")


def test_serve_command_line_tls_options_and_sighup(tls_server, pki, tmp_path):
    """``auroratrack serve --tls-cert/--tls-key --upstream-tls verify-identity --upstream-ca``, the
    fingerprint in ``auroratrack status``, and SIGHUP swapping the certificate while a session lives."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki["proxy"].cert, cert)
    shutil.copy(pki["proxy"].key, key)
    data_dir = tmp_path / "data"
    (tmp_path / "password").write_text(ADMIN_PASSWORD)
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--upstream", f"127.0.0.1:{tls_server.port}",
             "--user", ADMIN_USER, "--password-file", str(tmp_path / "password"), "--listen", "127.0.0.1:0",
             "--admin", "127.0.0.1:0", "--data-dir", str(data_dir), "--no-capture", "--client-tls", "required",
             "--tls-cert", str(cert), "--tls-key", str(key), "--upstream-tls", "verify-identity",
             "--upstream-ca", str(pki["ca"].path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        client = admin_client(data_dir, serve)
        status = client.get("/v1/status")
        assert status["tls"]["client"]["sha256_fingerprint"] == certificate_fingerprint(pki["proxy"].cert)
        assert status["tls"]["upstream"]["mode"] == "verify-identity"
        port = int(status["listen"].rsplit(":", 1)[1])
        before = pymysql.connect(host="127.0.0.1", port=port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                 ssl_ca=str(pki["ca"].path), ssl_verify_identity=True)
        renewed = pki["ca"].issue("proxy-cli-renewed", dns=("localhost",), ips=("127.0.0.1",))
        shutil.copy(renewed.cert, cert)
        shutil.copy(renewed.key, key)
        serve.send_signal(signal.SIGHUP)
        wanted = certificate_fingerprint(renewed.cert)
        deadline = time.monotonic() + 20
        while client.get("/v1/status")["tls"]["client"]["sha256_fingerprint"] != wanted:
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.1)
        with before.cursor() as cur:  # not dropped
            cur.execute("SELECT 5")
            assert cur.fetchone() == (5,)
        before.close()
        done = subprocess.run([sys.executable, "-m", "proxy.cli", "status", "--data-dir", str(data_dir)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and wanted[:20] in done.stdout.replace("\n", "")
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)


def test_change_user_on_a_session_whose_legs_differ(tls_proxy):
    """A plaintext client, the server's leg TLS: COM_CHANGE_USER goes through the login relay again."""
    mysql_connector = pytest.importorskip("mysql.connector")
    conn = mysql_connector.connect(host="127.0.0.1", port=tls_proxy.port, user=ADMIN_USER, password=ADMIN_PASSWORD,
                                   ssl_disabled=True, use_pure=True)
    try:
        sessions = tls_proxy.call_soon(lambda: list(tls_proxy.service.proxy.sessions.values()))
        mine = [s for s in sessions if s.tracker.connection_id == conn.connection_id]
        assert len(mine) == 1 and "data_received" in vars(mine[0])  # watched for COM_CHANGE_USER
        for _ in range(2):
            conn.cmd_change_user(username=ADMIN_USER, password=ADMIN_PASSWORD, database="mysql")
            cur = conn.cursor()
            cur.execute("SELECT CURRENT_USER(), DATABASE()")
            assert cur.fetchall() == [(f"{ADMIN_USER}@%", "mysql")]
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            assert cur.fetchall()[0][1]
        with pytest.raises(mysql_connector.Error) as caught:
            conn.cmd_change_user(username=ADMIN_USER, password="wrong")
        assert caught.value.errno == 1045
    finally:
        conn.close()


def _tls_pump(sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
              step) -> object:
    """Run ``step()`` on the TLS object until it stops wanting bytes, moving bytes over ``sock``."""
    while True:
        try:
            result = step()
        except ssl.SSLWantReadError:
            if outgoing.pending:
                sock.sendall(outgoing.read())
            data = sock.recv(65536)
            assert data, "the proxy closed the connection"
            incoming.write(data)
            continue
        if outgoing.pending:
            sock.sendall(outgoing.read())
        return result


def test_client_hello_in_the_same_segment_as_the_ssl_request(tls_proxy, pki):
    """cpython gh-142352: bytes read past the SSLRequest are the ClientHello, and must reach TLS."""
    with raw.RawConnection("127.0.0.1", tls_proxy.port) as conn:
        nonce = conn.read_handshake()
        caps = raw.BASE_CAPABILITIES | raw.CLIENT_SSL
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ssl.create_default_context(cafile=str(pki["ca"].path)).wrap_bio(
            incoming, outgoing, server_hostname="127.0.0.1")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        conn.sock.sendall(raw.frame(struct.pack("<IIB23s", caps, 1 << 24, 45, b""), 1) + hello)  # one write
        _tls_pump(conn.sock, tls, incoming, outgoing, tls.do_handshake)
        response = conn.handshake_response(ADMIN_USER, raw.native_password_scramble(ADMIN_PASSWORD, nonce),
                                           None, caps)
        tls.write(raw.frame(response, 2))
        reply = _tls_pump(conn.sock, tls, incoming, outgoing, lambda: tls.read(65536))
        assert reply[3] == 3 and reply[4] == 0x00, reply  # OK, sequence id 3 on the client's leg
