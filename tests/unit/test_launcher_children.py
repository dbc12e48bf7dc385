"""Children started by :func:`pixelfox.cli.launcher.start_child`: private files, started from any
thread (real processes); and a saved port that another program holds is never replaced silently."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pixelfox.cli.launcher import LocalCluster, private_tree, start_child


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_child_started_from_another_thread_outlives_that_thread_and_writes_private_files(tmp_path: Path) -> None:
    out = tmp_path / "made"
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(
        start_child(["sh", "-c", f"touch {out}; exec sleep 60"], tmp_path / "sh.log")))
    thread.start()
    thread.join()
    child = started[0]
    try:
        deadline = time.monotonic() + 5
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert child.poll() is None  # still running after the thread that started it ended
        assert out.stat().st_mode & 0o777 == 0o600  # umask 077
    finally:
        child.kill()
        child.wait()


def test_a_saved_port_another_program_holds_is_replaced_loudly_and_kept_on_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:  # the "foreign program"
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        state = tmp_path / ".pixelfox"
        state.mkdir()
        (state / "ports.json").write_text(json.dumps({"web1.http": taken}))
        got = LocalCluster(tmp_path)._port("web1.http")
    assert got != taken
    err = capsys.readouterr().err
    assert f"WARNING: port {taken} (web1.http) of this folder's cluster is taken by another program; using {got}" \
        in err, err
    assert json.loads((state / "ports.json").read_text()) == {"web1.http": taken}  # the next start tries it again


def test_private_tree_takes_group_and_other_bits_off_an_older_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "pool").mkdir(parents=True)
    (tmp_path / "data").chmod(0o755)
    (tmp_path / "data" / "pool").chmod(0o750)
    db = tmp_path / "pixelfox.db"
    db.write_bytes(b"x")
    db.chmod(0o644)
    script = tmp_path / "run.sh"
    script.write_bytes(b"#!/bin/sh\n")
    script.chmod(0o755)
    mine = tmp_path / "data" / "pool" / "obj"
    mine.write_bytes(b"y")
    mine.chmod(0o600)
    (tmp_path / "link").symlink_to("/etc/hostname")
    assert private_tree(tmp_path) == 4  # data, pool, pixelfox.db, run.sh; obj already private
    pool = tmp_path / "data" / "pool"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (pool.parent, pool, db, script, mine)}
    assert modes == {"data": 0o700, "pool": 0o700, "pixelfox.db": 0o600, "run.sh": 0o700, "obj": 0o600}
    assert Path("/etc/hostname").stat().st_mode & 0o044  # the symlink's target was not touched
    assert private_tree(tmp_path) == 0


def test_processing_nodes_get_two_malloc_arenas_unless_the_environment_sets_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".pixelfox").mkdir()
    local = LocalCluster(tmp_path)
    local.manager_address, local.secret = "127.0.0.1:1", "s"
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert local._env("proc1")["MALLOC_ARENA_MAX"] == "2"
    assert "MALLOC_ARENA_MAX" not in local._env("upload1")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert local._env("proc2")["MALLOC_ARENA_MAX"] == "4"
