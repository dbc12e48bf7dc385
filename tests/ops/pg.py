"""A real PostgreSQL server for tests: Debian ``postgresql`` 15 started as the postgres user.

PostgreSQL refuses to run as root (RELIABILITY.md §6), so the data folder is owned by
``postgres`` and every command goes through ``runuser``. It listens on 127.0.0.1 on a free
port with ``trust`` auth (loopback only, throw-away data, fsync off for speed).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pixelfox.cli.launcher import free_port


def pg_bin() -> Path | None:
    """The folder with ``initdb``/``pg_ctl`` (newest Debian version), None if not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    bin: Path
    folder: Path
    port: int
    host: str = "127.0.0.1"
    netns: str = ""  # network namespace it listens in ("" = the test's own)

    def _ns(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def url(self, db: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        res = subprocess.run([*self._ns(), str(self.bin / "psql"), "-h", self.host, "-p", str(self.port),
                              "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                             capture_output=True, text=True, check=True, timeout=60)
        return res.stdout

    def create_db(self, name: str) -> str:
        """A fresh, empty database ``name`` (dropped first if it exists); returns its asyncpg URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"),
                        "-m", "immediate", "-w", "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres(host: str = "127.0.0.1", netns: str = "", allow_cidr: str = "") -> Postgres:
    """initdb + pg_ctl start as postgres; raises RuntimeError with the log on failure.

    ``host``/``netns``: listen on that address inside that network namespace (multi-host
    tests); ``allow_cidr``: also trust connections from that network (pg_hba.conf).
    """
    bindir = pg_bin()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="pixelfox-pg-"))
    pw = pwd.getpwnam("postgres")
    os.chown(folder, pw.pw_uid, pw.pw_gid)
    port = free_port() if not netns else 5432
    ns = ["ip", "netns", "exec", netns] if netns else []
    run = [*ns, "runuser", "-u", "postgres", "--"]
    subprocess.run([*run, str(bindir / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--no-sync"], capture_output=True, check=True, timeout=120)
    if allow_cidr:
        with (folder / "data" / "pg_hba.conf").open("a") as f:
            f.write(f"host all all {allow_cidr} trust\n")
    opts = f"-p {port} -k {folder} -c listen_addresses={host} -c fsync=off -c synchronous_commit=off"
    res = subprocess.run([*run, str(bindir / "pg_ctl"), "-D", str(folder / "data"), "-o", opts, "-l",
                          str(folder / "log"), "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=90)
    pg = Postgres(bindir, folder, port, host, netns)
    if res.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        pg.stop()
        raise RuntimeError(f"pg_ctl start failed: {res.stderr}\n{log}")
    deadline = time.monotonic() + 30
    while True:
        try:
            pg.psql("SELECT 1")
            return pg
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_replica(primary: Postgres) -> Postgres:
    """A streaming replica of ``primary`` (``pg_basebackup -R``) on another loopback port."""
    folder = Path(tempfile.mkdtemp(prefix="pixelfox-pg-replica-"))
    pw = pwd.getpwnam("postgres")
    os.chown(folder, pw.pw_uid, pw.pw_gid)
    run = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run, str(primary.bin / "pg_basebackup"), "-h", primary.host, "-p", str(primary.port), "-U",
                    "postgres", "-D", str(folder / "data"), "-R", "-X", "stream", "--no-sync", "-c", "fast"],
                   capture_output=True, check=True, timeout=120)
    port = free_port()
    opts = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c hot_standby=on"
    res = subprocess.run([*run, str(primary.bin / "pg_ctl"), "-D", str(folder / "data"), "-o", opts, "-l",
                          str(folder / "log"), "-w", "-t", "60", "start"], capture_output=True, text=True, timeout=90)
    replica = Postgres(primary.bin, folder, port)
    if res.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        replica.stop()
        raise RuntimeError(f"replica start failed: {res.stderr}\n{log}")
    return replica
