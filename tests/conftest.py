"""Shared fixtures: corpus paths and one real local cluster per test session.

The ``cluster`` fixture starts every node as its own process on loopback ports (the same
:class:`~pixelfox.cli.launcher.LocalCluster` that ``pixelfox up`` uses), with a private
``redis-server`` and an SQLite file in a temp folder, and stops them all at the end.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pixelfox.cli.launcher import Counts, LocalCluster

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PIXELFOX_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"


def manifest_rows() -> list[dict[str, str]]:
    """Rows of ``corpus/MANIFEST.tsv`` (file, bytes, sha256, format, width, height, frames, expected_outcome, note)."""
    with (CORPUS / "MANIFEST.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@dataclass
class ClusterHandle:
    """What tests need to talk to the running cluster."""

    local: LocalCluster
    root: Path
    web_url: str
    manager_address: str
    secret: str
    redis_url: str
    admin_api_key: str

    def pixelfox(self, *args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real ``pixelfox`` CLI in the cluster's folder (it finds the cluster by itself)."""
        return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=self.root, capture_output=True,
                              text=True, input=input, timeout=timeout, check=False)

    def start_web(self, name: str) -> str:
        url = self.local.add_web(name)
        wait_http(f"{url}/healthz")
        return url

    def restart_web(self, url: str) -> str:
        name = self.local.web_names[url]
        self.local.terminate(name)
        new = self.local.add_web(name, port=int(url.rsplit(":", 1)[1]))
        wait_http(f"{new}/healthz")
        return new

    def storage_files(self) -> list[Path]:
        """Every visible object file under the storage nodes' pools."""
        out: list[Path] = []
        for d in (self.root / ".pixelfox" / "data").glob("storage*"):
            out.extend(p for p in d.rglob("*") if p.is_file())
        return out


def wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")
        time.sleep(0.2)


def start_local(local: LocalCluster, timeout_s: float = 90.0, grace_s: float = 15.0,
                then: Callable[[LocalCluster], object] | None = None) -> str:
    """Start ``local``, wait up to ``timeout_s`` s until every node is ready, run ``then(local)`` (more
    nodes, a restart: anything before the state is written), then make the local admin's API key and
    write ``cluster.json`` (as ``pixelfox up`` does). Returns that key. On any error, ``SystemExit``
    from a node that exits or a start that times out included, the cluster is stopped (``grace_s`` s
    per group of nodes) and the error raised again; after a return the caller stops it."""
    try:
        local.start()
        asyncio.run(local.wait_ready(timeout_s))
        if then is not None:
            then(local)
        key = asyncio.run(local.ensure_admin())
        local.write_state(key)
    except BaseException:
        local.stop(grace_s)
        raise
    return key


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``XDG_STATE_HOME`` of the session (``pixelfox put`` keeps its upload journal there): a temp
    folder, never the user's own ``~/.local/state``."""
    path = tmp_path_factory.mktemp("xdg-state")
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(path)
    yield path
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(scope="session", autouse=True)
def quick_web_drain() -> Iterator[None]:
    """``PIXELFOX_DRAIN_DELAY_S=0`` for every web node the tests start (they inherit this environment): a
    web node stopping fails ``/readyz`` for that long first, for a balancer to notice, 1 s by default; no
    test has a balancer polling ``/readyz``, and every cluster stop and web restart waited it out. A test
    may still set its own (``role_env``, ``extra_env``)."""
    before = os.environ.get("PIXELFOX_DRAIN_DELAY_S")
    os.environ["PIXELFOX_DRAIN_DELAY_S"] = "0"
    yield
    if before is None:
        os.environ.pop("PIXELFOX_DRAIN_DELAY_S", None)
    else:
        os.environ["PIXELFOX_DRAIN_DELAY_S"] = before


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS} (set PIXELFOX_SHARED)")
    return CORPUS


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
    root = tmp_path_factory.mktemp("cluster")
    # every test registers from 127.0.0.1: lift the per-address registration limit (10 an hour) for the session
    web_env = {"PIXELFOX_REGISTER_PER_HOUR": "10000"}
    local = LocalCluster(root, Counts(upload=2, proc=2, storage=2, web=1), role_env={"web": web_env})
    admin = start_local(local)
    try:
        for url in local.web_urls:
            wait_http(f"{url}/healthz")
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        yield ClusterHandle(local, root, local.web_urls[0], local.manager_address, state["secret"],
                            local.redis_url, admin)
    finally:
        local.stop()
