"""Unknown ``PIXELFOX_`` variables are named on stderr with the closest known one: a fresh tester's
``PIXELFOX_ALOW_ANONYMOUS=false`` was ignored without a word. Every name the repository mentions is known."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pixelfox.cli.setting_names import is_known, known_settings, unknown_settings

ROOT = Path(__file__).resolve().parents[2]
#: what is not PixelFox's source, docs or deploy files
SKIPPED_DIRS = {".git", ".venv", "node_modules", "target", "__pycache__", ".pytest_cache", ".ruff_cache"}
NAME = re.compile(r"PIXELFOX_[A-Za-z0-9_]*[A-Za-z0-9]")
#: the misspellings the tests below make on purpose
MISSPELLED = {"PIXELFOX_ALOW_ANONYMOUS", "PIXELFOX_REDIS_URL", "PIXELFOX_NOT_A_THING", "PIXELFOX_WORKRES"}


def _mentioned() -> dict[str, Path]:
    """Every ``PIXELFOX_...`` name in a text file of the repository, with one file that has it."""
    found: dict[str, Path] = {}
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for file in files:
            path = Path(folder) / file
            try:
                text = path.read_text()
            except (UnicodeDecodeError, OSError):
                continue
            for name in NAME.findall(text):
                found.setdefault(name, path)
    return found


def test_every_name_in_the_source_tree_and_docs_is_known() -> None:
    known = known_settings()
    mentioned = _mentioned()
    assert len(mentioned) > 100 and "PIXELFOX_DRAIN_DELAY_S" in mentioned and "PIXELFOX_FAILPOINT" in mentioned
    # "PIXELFOX_S3__..." in prose names a family: known when some known name starts with it
    unknown = {name: str(path.relative_to(ROOT)) for name, path in mentioned.items()
               if name not in MISSPELLED and not is_known(name, known)
               and not any(k.startswith(name + "_") for k in (*known[0], *known[1]))}
    assert unknown == {}


def test_unknown_names_are_warned_about_with_the_closest_known_one() -> None:
    env = {"PIXELFOX_ALOW_ANONYMOUS": "false", "PIXELFOX_REDIS_URL": "redis://x", "PIXELFOX_NOT_A_THING": "1",
           "PIXELFOX_ALLOW_ANONYMOUS": "false", "pixelfox_site_name": "x", "PIXELFOX_TIERS__RULES__COLD__AGE_S": "9",
           "PIXELFOX_S3__BUCKET": "b", "PIXELFOX_DRAIN_DELAY_S": "0", "PIXELFOX_FAILPOINT": "", "HOME": "/"}
    assert unknown_settings(env) == [
        "warning: PIXELFOX_ALOW_ANONYMOUS is not a PixelFox setting (did you mean PIXELFOX_ALLOW_ANONYMOUS?)",
        "warning: PIXELFOX_NOT_A_THING is not a PixelFox setting",
        "warning: PIXELFOX_REDIS_URL is not a PixelFox setting (did you mean PIXELFOX_REDIS__URL?)",
    ]


def test_print_config_warns_about_a_misspelled_setting() -> None:
    for module in ("web", "nodes.upload"):
        res = subprocess.run([sys.executable, "-m", module, "--print-config"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True,
                             env={"PATH": os.environ["PATH"], "PIXELFOX_ALOW_ANONYMOUS": "false",
                                  "PIXELFOX_ALLOW_ANONYMOUS": "true"})
        assert res.stderr == ("warning: PIXELFOX_ALOW_ANONYMOUS is not a PixelFox setting "
                              "(did you mean PIXELFOX_ALLOW_ANONYMOUS?)\n"), (module, res.stderr)
        assert res.stdout.startswith("{"), res.stdout


@pytest.mark.parametrize(("module", "node_id"), [
    ("nodes.manager", "manager1"), ("nodes.upload", "upload1"), ("nodes.proc", "proc1"), ("web", "web1"),
    ("nodes.storage", f"storage-{socket.gethostname()}"),
])
def test_print_config_shows_the_node_id_a_node_goes_by(module: str, node_id: str) -> None:
    """Without ``PIXELFOX_NODE_ID`` it showed ``"node_id": ""`` while the node registered as ``proc1``..."""
    res = subprocess.run([sys.executable, "-m", module, "--print-config"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True, env={"PATH": os.environ["PATH"]})
    assert json.loads(res.stdout)["node_id"] == node_id
    named = subprocess.run([sys.executable, "-m", module, "--print-config"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, check=True, env={"PATH": os.environ["PATH"], "PIXELFOX_NODE_ID": "n7"})
    assert json.loads(named.stdout)["node_id"] == "n7"


def test_a_node_started_by_hand_logs_a_misspelled_setting() -> None:
    """Started by hand on another host (no ``pixelfox up`` to warn), a node names the misspelling in its log."""
    env = {"PATH": os.environ["PATH"], "PIXELFOX_CLUSTER__SECRET": "s" * 32, "PIXELFOX_CLUSTER__MANAGER": "127.0.0.1:9",
           "PIXELFOX_GRPC__PORT": "0", "PIXELFOX_METRICS_PORT": "0", "PIXELFOX_WORKERS": "1",
           "PIXELFOX_WORKRES": "4"}
    proc = subprocess.Popen([sys.executable, "-m", "nodes.proc"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            text=True)
    stuck = threading.Timer(60, proc.kill)  # the read below ends at the latest when the node is killed
    stuck.start()
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "serving gRPC" in line:  # the warning, if any, came before
                break
    finally:
        stuck.cancel()
        proc.kill()  # its clean stop is not what this tests (without a manager it waits out its grace)
        proc.wait(30)
        proc.stderr.close()  # type: ignore[union-attr]
    warned = [ln for ln in lines if "not a PixelFox setting" in ln]
    assert len(warned) == 1 and " WARNING pixelfox.config: PIXELFOX_WORKRES is not a PixelFox setting " \
        "(did you mean PIXELFOX_WORKERS?)" in warned[0], lines
