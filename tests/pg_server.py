"""A real PostgreSQL server for the tests: initdb into a temporary directory, pg_ctl start, stop.

PostgreSQL refuses to run as root, and CI runs as root: the server then runs as the `postgres`
user (Debian's package creates it) through runuser. It listens on 127.0.0.1 on a free port only.
`$AGENTPROBE_TEST_PG_URL` names a server to use instead (it must let the user create databases).
No binaries and no URL: the tests that need PostgreSQL fail and say how to install it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

INSTALL = "apt-get install postgresql (Debian) or set AGENTPROBE_TEST_PG_URL to a server"
# The server asks for a password over TCP (scram-sha-256), so every test's URL carries one, and the
# tests can check that it never shows in any output, log or row.
PASSWORD = "pgPW-n0t-in-any-0utput"


def find_bindir() -> Path | None:
    for candidate in [os.environ.get("AGENTPROBE_PG_BINDIR"), *sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                                                    reverse=True)]:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One server in a temp dir; `url(db)` for a database on it; `stop()`/`start()` for outage tests."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        """durable: fsync on (the benchmark); the tests run without, the machine's crash is not under test."""
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="agentprobe-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            os.chmod(self.root, 0o777)
            shutil.chown(self.root, self.user)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.user:
            shutil.chown(pwfile, self.user)
        self._run("initdb", "-D", str(self.data), "-U", "agentprobe", "--pwfile", str(pwfile),
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--locale=C.UTF-8", "--encoding=UTF8", "-N")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{self.root}'\n"
                    "synchronous_commit = off\nmax_connections = 200\n")
            if not durable:
                f.write("fsync = off\nfull_page_writes = off\n")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not come up on port {self.port}: see {self.log}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def base_url(self, password: str | None = PASSWORD) -> str:
        auth = "agentprobe" + (f":{password}" if password else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}"

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def new_database(base_url: str) -> str:
    """A fresh, empty database on the server at base_url (no database part); its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(base_url + "/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"


def base_of(url: str) -> str:
    """postgresql://user@host:port/db -> postgresql://user@host:port"""
    head, _, _ = url.rpartition("/")
    return head if "://" in head and head.split("://", 1)[1] else url
