"""Private MySQL/MariaDB servers for development, tests and benchmarks.

Owns one server process at a time, started from the binaries on PATH (``mariadbd`` or
``mysqld``) in a directory of its own, on its own port, with the binlog settings auroratrack
needs (ROW format, FULL row image, FULL row metadata). It writes only inside that directory and
never touches a server it did not start.

Used by ``make up`` (``python -m proxy.sandbox up``), by the test suite's session fixture, and by
the benchmarks. ``--no-defaults`` keeps Debian's /etc/mysql configuration out of the way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pymysql

ADMIN_USER = "at_admin"
ADMIN_PASSWORD = "at_admin"
STARTUP_TIMEOUT_S = 60.0

# The settings DESIGN.md decision 3 requires, plus room for the proxy's tests (500 clients,
# 20 MiB BLOBs). Durability is relaxed because these servers hold nothing worth a fsync.
BINLOG_ARGS = (
    "--log-bin=binlog",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
    "--server-id=1",
)
COMMON_ARGS = (
    "--bind-address=127.0.0.1",
    "--max-allowed-packet=256M",
    "--max-connections=2000",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--innodb-buffer-pool-size=256M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--local-infile=1",
)


@dataclass(frozen=True)
class ServerBinary:
    """A server program found on this machine and what it is."""

    path: str
    flavor: str  # "mariadb" or "mysql"
    version: str


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def find_server_binary() -> ServerBinary:
    """Find ``mariadbd`` or ``mysqld`` on PATH (or in /usr/sbin, where Debian puts them)."""
    search_path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/usr/local/mysql/bin"
    for name in ("mariadbd", "mysqld"):
        found = shutil.which(name, path=search_path)
        if found:
            out = subprocess.run(
                [found, "--version"], capture_output=True, text=True, check=True
            ).stdout
            flavor = "mariadb" if "mariadb" in out.lower() else "mysql"
            version = out.split("Ver", 1)[-1].split()[0] if "Ver" in out else out.strip()
            return ServerBinary(found, flavor, version)
    raise RuntimeError(
        "no MySQL or MariaDB server binary on PATH (looked for mariadbd, mysqld); "
        "install one, e.g. `apt-get install mariadb-server`"
    )


class PrivateServer:
    """One private server in ``base_dir``: initialise, start, stop, restart.

    The data directory survives ``stop()``/``start()`` so tests can restart the server under a
    running streamer. ``stop()`` is also called at interpreter exit by the owner, not here.
    """

    def __init__(self, base_dir: Path, port: int | None = None, extra_args: tuple = ()):
        self.base_dir = Path(base_dir).resolve()
        self.port = port or find_free_port()
        self.extra_args = tuple(extra_args)
        self.binary = find_server_binary()
        self.process: subprocess.Popen | None = None

    # -- paths -----------------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_path(self) -> Path:
        return self.base_dir / "mysqld.sock"

    @property
    def tmp_dir(self) -> Path:
        """The server's own temporary directory: servers started side by side must not share
        /tmp (mariadb-install-db was seen failing on another instance's #sql-temptable file)."""
        return self.base_dir / "tmp"

    @property
    def error_log(self) -> Path:
        return self.base_dir / "mysqld.err"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "mysqld.pid"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Initialise the data directory if needed, start the server and wait until it answers."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        fresh = not (self.data_dir / "mysql").exists()
        if fresh:
            self._initialise()
        args = [
            self.binary.path,
            "--no-defaults",
            f"--datadir={self.data_dir}",
            f"--port={self.port}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pid_file}",
            f"--log-error={self.error_log}",
            f"--tmpdir={self.tmp_dir}",
            *BINLOG_ARGS,
            *COMMON_ARGS,
            *self._flavor_args(),
            *self.extra_args,
        ]
        if os.geteuid() == 0:
            args.insert(2, "--user=root")
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_until_ready()
        if fresh:
            self._create_admin_user()

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM), waiting for it to exit."""
        pid = self._running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline and _pid_alive(pid):
            if self.process is not None and self.process.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.1)
            else:
                time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- connections ---------------------------------------------------------------------------
    def connect(self, database: str | None = None, **kwargs) -> pymysql.Connection:
        """A PyMySQL connection as the sandbox's all-privileges admin user, over TCP."""
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=ADMIN_USER,
            password=ADMIN_PASSWORD,
            database=database,
            autocommit=True,
            **kwargs,
        )

    @property
    def dsn(self) -> str:
        return f"mysql://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{self.port}"

    # -- internals -------------------------------------------------------------------------------
    def _flavor_args(self) -> list[str]:
        if self.binary.flavor == "mariadb":
            return ["--plugin-load-add=auth_ed25519", "--log-bin-compress=OFF"]
        return [
            "--mysqlx=OFF",
            "--binlog-transaction-compression=OFF",
            "--gtid-mode=ON",
            "--enforce-gtid-consistency=ON",
            "--local-infile=ON",
        ]

    def _initialise(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        if self.binary.flavor == "mariadb":
            install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
            cmd = [
                install,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                f"--tmpdir={self.tmp_dir}",
            ]
            if os.geteuid() == 0:
                cmd.append("--user=root")
        else:
            cmd = [
                self.binary.path,
                "--no-defaults",
                "--initialize-insecure",
                f"--datadir={self.data_dir}",
            ]
            if os.geteuid() == 0:
                cmd.append("--user=root")
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"initialising {self.data_dir} failed:\n{result.stdout}{result.stderr}")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited at start-up; see {self.error_log}:\n{self._log_tail()}")
            try:
                conn = pymysql.connect(unix_socket=str(self.socket_path), user="root", connect_timeout=2)
                conn.close()
                return
            except pymysql.MySQLError as exc:
                last_error = exc
                time.sleep(0.05)
        raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT_S}s ({last_error}):\n{self._log_tail()}")

    def _create_admin_user(self) -> None:
        conn = pymysql.connect(unix_socket=str(self.socket_path), user="root", autocommit=True)
        with conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER IF NOT EXISTS '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'")
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION")

    def _running_pid(self) -> int | None:
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no error log)"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """``python -m proxy.sandbox up|down --dir DIR [--port N]``: used by ``make up``/``make down``."""
    parser = argparse.ArgumentParser(prog="python -m proxy.sandbox", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "destroy"])
    parser.add_argument("--dir", default=".auroratrack/server", type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    port_file = args.dir / "port"
    port = args.port or (int(port_file.read_text()) if port_file.exists() else 0)
    server = PrivateServer(args.dir, port=port or None)
    if args.action == "up":
        if server._running_pid() is None:
            server.start()
        port_file.write_text(str(server.port))
        print(f"{server.binary.flavor} {server.binary.version} listening on 127.0.0.1:{server.port} "
              f"(user {ADMIN_USER}, password {ADMIN_PASSWORD}, data in {server.data_dir})")
    elif args.action == "down":
        server.stop()
    else:
        server.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
