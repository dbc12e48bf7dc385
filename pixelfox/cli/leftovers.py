"""Children a previous ``pixelfox up`` left running (it was SIGKILLed before its nodes learned to die
with it, or a node ignored the signal): found from the pids in ``cluster.json`` and stopped, so the
next ``up`` gets its own ports back instead of moving every share link.

A recorded pid counts as ours only when ``/proc`` proves it: a ``python -m nodes.*``/``web``
process whose working folder is this cluster's folder, or a ``redis-server`` whose working folder
(its ``--dir``) is this cluster's ``.pixelfox/redis``. Anything else (a pid reused by another program) is left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import TextIO

from pixelfox.cli.context import STATE_DIR, STATE_FILE

NODE_MODULES = ("nodes.manager", "nodes.storage", "nodes.upload", "nodes.proc", "web")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def is_ours(pid: int, root: Path) -> bool:
    """Whether process ``pid`` is a node or the private Redis of the cluster in folder ``root`` (see module doc)."""
    argv = _cmdline(pid)
    if not argv:
        return False
    if os.path.basename(argv[0].split(" ", 1)[0]) == "redis-server":
        # Redis rewrites its command line ("redis-server 127.0.0.1:PORT") and chdirs to its --dir
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{pid}/cwd") == str(root / STATE_DIR / "redis")
        return False
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in NODE_MODULES:
        with contextlib.suppress(OSError):
            return os.readlink(f"/proc/{pid}/cwd") == str(root)
    return False


def find(root: Path) -> dict[str, int]:
    """The children recorded in ``root``'s ``cluster.json`` that still run and are provably ours: name -> pid."""
    try:
        pids = json.loads((root / STATE_DIR / STATE_FILE).read_text()).get("pids") or {}
    except (OSError, ValueError):
        return {}
    return {name: int(pid) for name, pid in pids.items() if is_ours(int(pid), root)}


def stop(found: dict[str, int], grace_s: float = 15.0) -> None:
    """SIGTERM (and SIGCONT) the nodes, then Redis once they are gone; SIGKILL what outlives ``grace_s``."""
    nodes = [p for n, p in found.items() if n != "redis"]
    for group in (nodes, [p for n, p in found.items() if n == "redis"]):
        for pid in group:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                os.kill(pid, signal.SIGCONT)  # a stopped process (SIGSTOP, Ctrl-Z) handles its SIGTERM
        deadline = time.monotonic() + grace_s
        while any(_running(p) for p in group) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in group:
            if _running(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (an orphan's zombie is reaped by init soon)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop_left(root: Path, out: TextIO) -> dict[str, int]:
    """Stop the children a previous ``pixelfox up`` in ``root`` left running (:func:`find`, :func:`stop`), after
    one line on ``out`` naming them (``stopping nodes a previous `pixelfox up` left running: web1 (pid 12),
    ...``); returns them (name -> pid; empty: nothing was running, nothing said)."""
    found = find(root)
    if found:
        print("stopping nodes a previous `pixelfox up` left running: "
              + ", ".join(f"{n} (pid {p})" for n, p in sorted(found.items())), file=out, flush=True)
        stop(found)
    return found
