"""A throwaway PostgreSQL server for the tests marked `postgres`: one cluster per test session.

`initdb` into a temp dir, then `postgres` on a free loopback port (trust auth, loopback only),
run as the `postgres` OS user when the tests run as root (the server refuses to run as root).
Durability is switched off: the tests kill controllers, never this server.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

SERVER_USER = "postgres"
START_TIMEOUT_S = 30.0
MISSING = (
    "the PostgreSQL server is not installed ({what}); run `make test`, which installs the "
    "`postgresql` package and the `psycopg` driver (or: apt-get install postgresql; "
    "pip install -e '.[test]')"
)


def find_bindir() -> Path:
    """The newest installed server's bin dir (Debian puts it in /usr/lib/postgresql/N/bin)."""
    found = [Path(p).parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if bindir and (Path(bindir) / "initdb").exists():
            found.append(Path(bindir))
    if not found:
        pytest.fail(MISSING.format(what="no initdb in /usr/lib/postgresql/*/bin or pg_config"))

    def version(bindir: Path) -> int:
        match = re.search(r"/(\d+)/bin$", str(bindir))
        return int(match.group(1)) if match else 0

    return max(found, key=version)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresCluster:
    """A private cluster in `root`; `start()`, `create_database()` per test, `stop()`."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0
        # Root may not run the server; any other user runs it as themselves.
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._as = {"user": SERVER_USER, "group": SERVER_USER, "extra_groups": []}
            shutil.chown(root, SERVER_USER, SERVER_USER)

    @property
    def admin_conninfo(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={SERVER_USER} dbname=postgres"

    def start(self) -> None:
        """initdb, start the server and wait until it accepts connections.

        Raises:
            pytest.fail.Exception: the server did not come up (its log is in the message).
        """
        self.sockets.mkdir()
        if self._as:
            shutil.chown(self.sockets, SERVER_USER, SERVER_USER)
        initdb = subprocess.run(
            [
                str(self.bindir / "initdb"),
                f"--pgdata={self.data}",
                f"--username={SERVER_USER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
            **self._as,
        )
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed in {self.data}:\n{initdb.stdout}\n{initdb.stderr}")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.sockets),
                    # Each controller pools up to 48 connections.
                    "-c",
                    "max_connections=300",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                ],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._as,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        try:
            import psycopg
        except ImportError:
            pytest.fail(MISSING.format(what="the psycopg driver is missing"))
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"postgres exited at start:\n{self.log_tail()}")
            try:
                psycopg.connect(self.admin_conninfo, connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"postgres did not accept connections within {START_TIMEOUT_S} s:\n"
                        f"{self.log_tail()}"
                    )
                time.sleep(0.05)

    def create_database(self) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"dispatch_{self._databases}"
        with psycopg.connect(self.admin_conninfo, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{name}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then remove every file of the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster() -> PostgresCluster:
    """A running cluster in a new temp dir; the caller stops it."""
    bindir = find_bindir()
    cluster = PostgresCluster(bindir, Path(tempfile.mkdtemp(prefix="dispatch-pg-")))
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
