"""scripts/install says it is alive while the Rust core builds: pip -q hid cargo's output and the first
build (about 25 minutes on a busy 2-core machine) printed nothing after "a few minutes the first time".
Runs the real script in a copy of the tree whose .venv/bin/python stands in for pip (a 2.5 s "build")
and a tick of 1 s instead of 60; every Debian package it wants must already be installed here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUB = """#!/bin/sh
case "$*" in
  *"install -q -e"*) sleep 2.5 ;;
  *"import pixelfox._core"*) exit 1 ;;
  *"print(i.__name__)"*) echo pixelfox.imaging ;;
esac
"""


def test_install_prints_a_line_every_tick_while_it_builds(tmp_path: Path) -> None:
    if shutil.which("cargo") is None:
        pytest.skip("no Rust toolchain: scripts/install stops before building")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "install", tmp_path / "scripts" / "install")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STUB)
    python.chmod(0o755)
    (tmp_path / "web" / "node_modules").mkdir(parents=True)
    (tmp_path / "web" / "package-lock.json").write_text("{}")
    os.utime(tmp_path / "web" / "package-lock.json", (1, 1))
    (tmp_path / "web" / "node_modules" / ".package-lock.json").write_text("{}")  # newer: no npm ci
    res = subprocess.run(["bash", str(tmp_path / "scripts" / "install")], capture_output=True, text=True,
                         timeout=60, check=False, env=os.environ | {"PIXELFOX_INSTALL_TICK_S": "1"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == ("install: building the Rust core and installing pixelfox into .venv "
                        "(10-30 minutes the first time)")
    ticks = [line for line in lines if line.startswith("install: still building the Rust core (")]
    assert 1 <= len(ticks) <= 3, lines  # one a tick while the "build" runs, none once it is over
    assert lines[-1] == "install: done (pixelfox.imaging ok)", lines
