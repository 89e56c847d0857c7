"""A real, throwaway PostgreSQL server for the catalog's tests: initdb in a temp folder, pg_ctl on a free loopback
port, stopped (and its folder removed) at the end.

Durability is switched off (fsync, full_page_writes, synchronous_commit): a crashed test server is thrown away.
Local (unix socket) connections trust everyone; TCP connections need a password (scram), so a wrong password is
refused for real. When we are root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root).

``PHOTOSEARCH_TEST_POSTGRES``: the admin URL (a superuser) of a server already running; then none is started,
and the fault tests that stop the server are skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

BIN = Path(os.environ.get("PHOTOSEARCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
ENV_URL = "PHOTOSEARCH_TEST_POSTGRES"
USER, PASSWORD = "photosearch", "s3cret-pw"  # a superuser that logs in over TCP with this password


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.external = os.environ.get(ENV_URL)
        self._folder: Path | None = None
        if self.external:
            self.admin_url = self.external
            return
        if not (BIN / "initdb").is_file():
            raise RuntimeError(
                f"PostgreSQL's binaries are missing ({BIN / 'initdb'}): apt-get install postgresql-15, "
                f"or set {ENV_URL} to the admin URL of a running server"
            )
        self._folder = Path(tempfile.mkdtemp(prefix="photosearch-pg-"))
        self.port = _free_port()
        self._data = self._folder / "data"
        self._socket_dir = self._folder / "sock"
        self._log = self._folder / "log"
        self._socket_dir.mkdir()
        pwfile = self._folder / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(self._folder, "postgres")
            for path in (self._socket_dir, pwfile):
                shutil.chown(path, "postgres")
        self._run([BIN / "initdb", "-D", self._data, "-U", USER, "--pwfile", pwfile, "-E", "UTF8", "--locale=C.UTF-8",
                   "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])  # fmt: skip
        with (self._data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self._socket_dir}'\n"
                "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\nmax_connections = 50\n"
            )
        self.admin_url = f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/postgres"
        self.start()

    def _run(self, cmd: list[object]) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *map(str, cmd)], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run([BIN / "pg_ctl", "-D", self._data, "-l", self._log, "-w", "-t", "30", "start"])

    def stop(self) -> None:
        """A fast shutdown: open connections are told 57P01 (terminating connection due to administrator command)."""
        self._run([BIN / "pg_ctl", "-D", self._data, "-m", "fast", "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=None)
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def create_database(self, name: str | None = None, c_locale: bool = False) -> str:
        """A new, empty database (from template0: nothing a test left in template1); its URL. Its default
        collation is ICU's en-US, as on a typical server, not the cluster's C: the catalog must not rely on it.
        ``c_locale``: the plain C locale instead, whose lower() folds ASCII letters only."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        locale = "LOCALE 'C'" if c_locale else "LOCALE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        self._admin(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' {locale}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def close(self) -> None:
        if self._folder is None:
            return
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped by a test already
            self.stop()
        shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = None
