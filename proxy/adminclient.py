"""The admin API's client, for the CLI: finds a running ``auroratrack serve`` and talks to it.

``serve`` writes ``admin.json`` (host, port, pid) and ``admin.token`` into its data directory
(proxy/admin.py); ``AdminClient.from_data_dir`` reads both. Plain ``urllib`` keeps the CLI quick
to start (aiohttp alone takes ~0.4 s to import). Environment HTTP proxies are ignored on purpose:
the bearer token must never be sent anywhere but to ``serve``.

Two errors: ``AdminUnavailable`` (no serve to talk to; the message says how to start one or
point at it) and ``AdminError`` (serve answered with an error status; its JSON message and
details are kept).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN_FILE = "admin.token"  # written by proxy/admin.py (which the CLI must not import: aiohttp)
ADDRESS_FILE = "admin.json"
_WILDCARD_HOSTS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class AdminUnavailable(RuntimeError):
    """No running ``auroratrack serve`` could be reached through the data directory."""


class AdminError(RuntimeError):
    """``serve`` refused or failed a request (HTTP status >= 400)."""

    def __init__(self, status: int, message: str, details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or {}


def start_hint(data_dir: Path) -> str:
    return (f"no auroratrack serve found in {data_dir}: start it with "
            f"`auroratrack serve --data-dir {data_dir} --upstream HOST:PORT --user USER`, "
            f"or pass --data-dir (or set AURORATRACK_DATA_DIR) to the directory serve uses")


@dataclass(frozen=True)
class AdminClient:
    """Requests to one ``serve``'s admin API; JSON in, JSON out."""

    base_url: str
    token: str = field(repr=False)
    data_dir: Path | None = None
    timeout: float = 30.0

    @classmethod
    def from_data_dir(cls, data_dir: Path | str, timeout: float = 30.0) -> AdminClient:
        """The client for the ``serve`` that runs with ``data_dir``; ``AdminUnavailable`` if none does."""
        data_dir = Path(data_dir)
        address = _read_address(data_dir)
        try:
            token = (data_dir / TOKEN_FILE).read_text().strip()
        except PermissionError:
            raise AdminUnavailable(f"cannot read {data_dir / TOKEN_FILE}: it is readable only by the user "
                                   f"that runs auroratrack serve; run this command as that user") from None
        except FileNotFoundError:
            raise AdminUnavailable(start_hint(data_dir)) from None
        return cls(base_url(address["host"], address["port"]), token, data_dir, timeout)

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: dict) -> Any:
        return self._request("POST", path, body)

    def get_text(self, path: str) -> str:
        """A non-JSON resource (the Prometheus /metrics text)."""
        return self._request("GET", path, raw=True)

    def _request(self, method: str, path: str, body: dict | None = None, raw: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            **({"Content-Type": "application/json"} if data is not None else {}),
        })
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                payload = response.read()
                return payload.decode() if raw else json.loads(payload or b"null")
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
            raise self._unavailable(exc) from None

    def _error(self, exc: urllib.error.HTTPError) -> AdminError:
        try:
            payload = json.loads(exc.read() or b"{}")
        except ValueError:
            payload = {}
        message = payload.get("error") or f"HTTP {exc.code} {exc.reason}"
        if exc.code == 401:
            message = (f"auroratrack serve at {self.base_url} refused the token in "
                       f"{self.data_dir / TOKEN_FILE if self.data_dir else TOKEN_FILE}: {message}")
        return AdminError(exc.code, message, payload.get("details"))

    def _unavailable(self, exc: Exception) -> AdminUnavailable:
        reason = getattr(exc, "reason", exc)
        where = self.data_dir if self.data_dir is not None else self.base_url
        if isinstance(reason, ConnectionRefusedError):
            return AdminUnavailable(f"{start_hint(where)} (its admin address {self.base_url} refuses connections; "
                                    f"serve has stopped)")
        return AdminUnavailable(f"auroratrack serve at {self.base_url} did not answer: {reason}")


def base_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` for the address in admin.json (a wildcard bind means loopback)."""
    host = _WILDCARD_HOSTS.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _read_address(data_dir: Path) -> dict:
    try:
        address = json.loads((data_dir / ADDRESS_FILE).read_text())
    except FileNotFoundError:
        raise AdminUnavailable(start_hint(data_dir)) from None
    except (OSError, ValueError) as exc:
        raise AdminUnavailable(f"cannot read {data_dir / ADDRESS_FILE}: {exc}") from None
    if not _pid_alive(address.get("pid")):
        raise AdminUnavailable(f"{start_hint(data_dir)} (the serve that wrote {ADDRESS_FILE}, "
                               f"pid {address.get('pid')}, is no longer running)")
    return address


def _pid_alive(pid: Any) -> bool:
    """False only when we know the process is gone (serve runs on this host: the data dir is local)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
