"""TLS test material: certificates made with ``cryptography`` (a CA, and leaf certificates it
signs: valid, expired, or for another host), a private server that requires TLS, and the
configuration of a proxy in front of it. Test modules import the fixtures they use."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.sandbox import ADMIN_PASSWORD, ADMIN_USER, PrivateServer, find_server_binary
from proxy.serveradmin import UpstreamCredentials
from proxy.service import BackgroundService, ServeConfig
from tests.conftest import ServerHandle


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def _write_key(key, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class TestCA:
    """A throwaway certificate authority in ``directory``."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "auroratrack test CA"):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name.replace(' ', '-')}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",),
              expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = ((now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)) if expired
                      else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)))
        alt = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
            .issuer_name(self.name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        issued = Issued(self.directory / f"{stem}-cert.pem", self.directory / f"{stem}-key.pem")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued


def server_tls_args(ca: TestCA, issued: Issued) -> tuple[str, ...]:
    """mariadbd/mysqld options for TLS with ``issued``, refusing plaintext TCP clients."""
    return (f"--ssl-cert={issued.cert}", f"--ssl-key={issued.key}", f"--ssl-ca={ca.path}",
            "--require-secure-transport=ON")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    """A test CA, the server's and the proxy's certificates it signs, and an unrelated CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = TestCA(directory)
    return {
        "ca": ca,
        "server": ca.issue("server", dns=(), ips=("127.0.0.1",)),  # names 127.0.0.1 only
        "proxy": ca.issue("proxy", dns=("localhost",), ips=("127.0.0.1",)),
        "other_ca": TestCA(directory, "another CA"),
        "dir": directory,
    }


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, pki):
    """A private server with TLS and require_secure_transport=ON, for one module."""
    try:
        find_server_binary()
    except RuntimeError as exc:
        pytest.skip(f"needs a server binary of its own: {exc}")
    server = PrivateServer(tmp_path_factory.mktemp("tls-server"),
                           extra_args=server_tls_args(pki["ca"], pki["server"]))
    server.start()
    yield server
    server.destroy()


def proxy_config(server: PrivateServer, pki: dict, tmp_path: Path, **overrides) -> ServeConfig:
    """auroratrack in front of ``server``: --upstream-tls verify-identity with the test CA, and
    a certificate of its own from that CA."""
    upstream = overrides.pop("upstream", None) or UpstreamCredentials(
        "127.0.0.1", server.port, ADMIN_USER, ADMIN_PASSWORD,
        tls_mode="verify-identity", tls_ca=str(pki["ca"].path))
    settings = dict(upstream=upstream, listen_port=0, admin_port=0, capture=False,
                    data_dir=tmp_path / "data", tls_cert=pki["proxy"].cert, tls_key=pki["proxy"].key)
    settings.update(overrides)
    return ServeConfig(**settings)


# Overrides of the session's ``mysql_server`` and ``proxy`` for a module that runs another
# module's tests over TLS: imported under those names (``from tls_support import
# tls_module_server as mysql_server``), they replace the session's fixtures in that module only.
@pytest.fixture(scope="module")
def tls_module_server(tls_server) -> ServerHandle:
    return ServerHandle("127.0.0.1", tls_server.port, ADMIN_USER, ADMIN_PASSWORD, private=tls_server)


@pytest.fixture(scope="module")
def tls_module_proxy(tls_server, pki, tmp_path_factory):
    service = BackgroundService(proxy_config(tls_server, pki, tmp_path_factory.mktemp("tls-proxy"))).start()
    yield service
    service.stop()
