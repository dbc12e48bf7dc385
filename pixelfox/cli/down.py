"""``pixelfox down``: stop the local cluster a ``pixelfox up`` runs in this folder (in another terminal,
in the background, under nohup), as its Ctrl-C would.

The running ``up`` is the process holding ``.pixelfox/lock`` (``flock``; the file holds its pid). It is
sent SIGTERM, which it handles as Ctrl-C: it stops its nodes (each gets its grace period) and releases
the lock. ``down`` waits for the lock, at most ``timeout_s``. Nodes a SIGKILLed ``up`` left running
(:mod:`pixelfox.cli.leftovers`) are stopped too. Nothing running is no error: ``down`` says so, exit 0.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import sys
import time
from pathlib import Path

from pixelfox import errors
from pixelfox.cli import context, leftovers

#: seconds ``down`` waits for ``up`` to stop its nodes by default (each node's own grace is 15 s)
DOWN_TIMEOUT_S = 60.0


def _lock_holder(lock: Path) -> int | None:
    """The pid of the ``pixelfox up`` holding ``lock`` now, 0 when the holder wrote no pid, None when no
    process holds it (or the file does not exist)."""
    try:
        fh = lock.open("r")
    except FileNotFoundError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = fh.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fh, fcntl.LOCK_UN)
        return None


def _is_up(pid: int) -> bool:
    """Whether ``pid`` is a ``pixelfox up`` (``/proc/<pid>/cmdline`` has a ``pixelfox`` word and ``up``):
    a pid is never signalled on the lock file's word alone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "up" in argv and any("pixelfox" in os.path.basename(a) for a in argv)


def run(root: Path, timeout_s: float = DOWN_TIMEOUT_S) -> int:
    """Stop the cluster of folder ``root``; 0 once nothing of it runs (or nothing did).

    Prints one line when it begins and one when it is done (stdout). Raises Timeout when ``up`` still
    holds the lock after ``timeout_s`` seconds, and Conflict when the lock's holder is not a
    ``pixelfox up`` this user may signal (its pid named, so the operator can look)."""
    lock = root / context.STATE_DIR / "lock"
    began = time.monotonic()
    pid = _lock_holder(lock)
    if pid is not None:
        if not pid or not _is_up(pid):
            raise errors.Conflict(f"{lock} is held by pid {pid or '?'}, which is not a `pixelfox up`: "
                                  "look at that process before stopping anything")
        print(f"stopping the cluster in {root} (pixelfox up, pid {pid})...", flush=True)
        try:
            os.kill(pid, signal.SIGTERM)  # up handles it as Ctrl-C
            os.kill(pid, signal.SIGCONT)  # a stopped up (Ctrl-Z) handles its SIGTERM
        except ProcessLookupError:
            pass
        except PermissionError:
            raise errors.Conflict(f"the cluster in {root} runs as another user (pixelfox up, pid {pid}): "
                                  "run `pixelfox down` as that user") from None
        while _lock_holder(lock) is not None:
            if time.monotonic() - began > timeout_s:
                raise errors.Timeout(f"pixelfox up (pid {pid}) did not stop within {timeout_s:g} s; "
                                     f"`kill -9 {pid}` stops it at once (the next `pixelfox up` stops "
                                     "the nodes it leaves)")
            time.sleep(0.2)
    found = leftovers.stop_left(root, sys.stdout)  # a SIGKILLed up's nodes (or ones that outlived their up)
    if pid is None and not found:
        print(f"no cluster is running in {root}", flush=True)
        return 0
    print(f"stopped in {time.monotonic() - began:.1f} s", flush=True)
    return 0


def cmd_down(opts: argparse.Namespace) -> int:
    """``pixelfox down [--timeout S]`` in the folder of a ``pixelfox up``."""
    return run(Path.cwd(), opts.timeout)
