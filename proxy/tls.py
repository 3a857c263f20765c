"""TLS material and policy: the proxy's certificate, the contexts of both legs, and reloading.

Owns no socket. It builds the ``ssl.SSLContext`` the relay uses to terminate a client's TLS
(``ClientTls``, reloadable on SIGHUP: sessions already encrypted keep their keys, new handshakes
use the new certificate), the context for the proxy's own TLS to the server (``upstream_context``,
by ``--upstream-tls`` mode), the keyword arguments that give PyMySQL connections (capture,
control, apply) the same policy, and the self-signed certificate ``serve`` makes in its data
directory when it is given none (DESIGN.md decision 13).

TLS 1.2 is the floor on both legs: MySQL 8.4 and MariaDB 11 refuse older versions too.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CLIENT_MODES = ("disabled", "preferred", "required")
UPSTREAM_MODES = ("disabled", "preferred", "required", "verify-ca", "verify-identity")

SELF_SIGNED_CERT = "tls-cert.pem"
SELF_SIGNED_KEY = "tls-key.pem"


@dataclass(frozen=True)
class CertificateFiles:
    """Where the proxy's own certificate (chain) and key live, PEM."""

    cert: Path
    key: Path
    self_signed: bool = False


def certificate_fingerprint(cert_path: Path) -> str:
    """SHA-256 of the (first) certificate's DER, as ``AB:CD:...`` (what clients pin)."""
    pem = Path(cert_path).read_text()
    der = ssl.PEM_cert_to_DER_cert(pem[: pem.index("-----END CERTIFICATE-----") + 25])
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def ensure_self_signed(data_dir: Path, hostnames: tuple[str, ...] = ()) -> CertificateFiles:
    """The self-signed certificate and key in ``data_dir``, made at first start (key mode 0600).

    An ECDSA P-256 key: every client TLS stack here speaks it, and its handshake costs the
    proxy a fraction of an RSA-2048 one (each client connection costs two handshakes)."""
    cert_path, key_path = data_dir / SELF_SIGNED_CERT, data_dir / SELF_SIGNED_KEY
    if cert_path.exists() and key_path.exists():
        return CertificateFiles(cert_path, key_path, self_signed=True)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    names = ["localhost", socket.gethostname(), *hostnames]
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(names) if n]
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    # A subject of its own (the serial number in it): peers look issuers up by subject, and two
    # self-signed certificates with the same name in one trust bundle would shadow each other.
    serial = x509.random_serial_number()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auroratrack proxy"),
                         x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        # A CA certificate too, so clients can name this file as their --ssl-ca.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("made a self-signed TLS certificate %s (SHA-256 %s)", cert_path, certificate_fingerprint(cert_path))
    return CertificateFiles(cert_path, key_path, self_signed=True)


def _server_context(files: CertificateFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


class ClientTls:
    """The client leg's policy and its current server-side context (swapped on reload)."""

    def __init__(self, mode: str, files: CertificateFiles | None):
        if mode not in CLIENT_MODES:
            raise ValueError(f"--client-tls must be one of {', '.join(CLIENT_MODES)}, not {mode!r}")
        self.mode = mode
        self.files = files
        self.context: ssl.SSLContext | None = None
        self.fingerprint: str | None = None
        if mode != "disabled":
            if files is None:
                raise ValueError("client TLS needs a certificate and key")
            self.reload()

    @property
    def offered(self) -> bool:
        return self.context is not None

    @property
    def required(self) -> bool:
        return self.mode == "required"

    def reload(self) -> None:
        """Read the certificate and key again; on failure the old ones stay in use."""
        if self.files is None:
            return
        context = _server_context(self.files)  # raises before anything is swapped
        self.context = context
        self.fingerprint = certificate_fingerprint(self.files.cert)

    def status(self) -> dict:
        """What ``auroratrack status`` shows of the client leg."""
        return {
            "mode": self.mode,
            "certificate": str(self.files.cert) if self.files else None,
            "self_signed": bool(self.files and self.files.self_signed),
            "sha256_fingerprint": self.fingerprint,
        }


def upstream_context(mode: str, ca_file: str | None = None) -> ssl.SSLContext | None:
    """The context for the proxy's own TLS to the server; None when ``mode`` is disabled.

    preferred/required encrypt without checking the certificate (like the MySQL clients'
    modes of the same names); verify-ca checks it against ``ca_file`` (or the system's CAs);
    verify-identity also checks that it names the host auroratrack connects to."""
    if mode not in UPSTREAM_MODES:
        raise ValueError(f"--upstream-tls must be one of {', '.join(UPSTREAM_MODES)}, not {mode!r}")
    if mode == "disabled":
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode in ("verify-ca", "verify-identity"):
        context.check_hostname = mode == "verify-identity"
        context.verify_mode = ssl.CERT_REQUIRED
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs()
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def upstream_requires_tls(mode: str) -> bool:
    """Whether a server that does not offer TLS must be refused."""
    return mode in ("required", "verify-ca", "verify-identity")


def pymysql_tls_kwargs(mode: str, ca_file: str | None) -> dict:
    """PyMySQL connect() arguments for the same policy as the relayed sessions' upstream leg."""
    if mode == "disabled":
        return {"ssl_disabled": True}
    if mode == "preferred":
        return {}  # PyMySQL's own default: TLS when the server offers it, unverified
    return {"ssl": upstream_context(mode, ca_file)}


@dataclass
class TlsPolicy:
    """Both legs' TLS, as the relay needs it: built once by the service, read per session."""

    client: ClientTls
    upstream_mode: str = "preferred"
    upstream_ca: str | None = None
    handshake_timeout: float = 10.0  # a client (or server) that never finishes its TLS handshake

    def __post_init__(self) -> None:
        self.upstream_context = upstream_context(self.upstream_mode, self.upstream_ca)

    @property
    def active(self) -> bool:
        """Whether sessions need the login relay (else the tracker follows the login itself)."""
        return self.client.offered or self.upstream_context is not None

    def status(self) -> dict:
        """The ``tls`` object of the admin API's status."""
        return {"client": self.client.status(),
                "upstream": {"mode": self.upstream_mode, "ca": self.upstream_ca}}
