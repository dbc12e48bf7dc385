"""``pixelfox up`` as a user runs it: the real command, --import, then Ctrl-C/SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_up_imports_then_stops_every_child(tmp_path: Path, corpus: Path, sig: signal.Signals) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(corpus / "photos" / "painting_rgb.png", photos)
    shutil.copy(corpus / "edge" / "text_renamed.jpg", photos)
    root = tmp_path / "site"
    root.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelfox", "up", "--upload", "1", "--proc", "1", "--storage", "1",
         "--import", str(photos)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if line.strip() == "import done":
                break
        out = "\n".join(lines)
        assert any(x.startswith("web: http://127.0.0.1:") for x in lines), out
        assert "ready" in lines, out
        assert "/i/" in out and "painting_rgb.png" in out, out
        assert "text_renamed.jpg" in out and "not" in out.split("text_renamed.jpg", 1)[1], out
        state = json.loads((root / ".pixelfox" / "cluster.json").read_text())
        pids = state["pids"]
        assert set(pids) >= {"redis", "manager1", "upload1", "proc1", "storage1", "web1"}
        assert all(alive(p) for p in pids.values())
        proc.send_signal(sig)
        assert proc.wait(60) == 0
        time.sleep(0.5)
        assert [n for n, p in pids.items() if alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
