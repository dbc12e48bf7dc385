"""A bad setting stops a node with one clear line per problem, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("module", "env", "line"), [
    ("nodes.manager", {"PIXELFOX_GRPC__PORT": "abc"},
     "PIXELFOX_GRPC__PORT: Input should be a valid integer, unable to parse string as an integer (got 'abc')"),
    ("nodes.storage", {"PIXELFOX_HTTP_WORKERS": "0"},
     "PIXELFOX_HTTP_WORKERS: Input should be greater than or equal to 1"),
    ("web", {"PIXELFOX_HTTP__PORT": "x"}, "PIXELFOX_HTTP__PORT: Input should be a valid integer"),
])
def test_bad_setting_is_one_line_and_exit_2(module: str, env: dict[str, str], line: str, tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}
    secret = {"PIXELFOX_CLUSTER__SECRET": "config-errors-secret"}
    r = subprocess.run([sys.executable, "-m", module], cwd=tmp_path, env=base | secret | env,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("configuration error:\n") and line in r.stderr
    assert "Traceback" not in r.stderr
