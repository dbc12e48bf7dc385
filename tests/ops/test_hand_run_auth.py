"""Credentials on a cluster run by hand (nodes started one by one, no ``pixelfox up``), through the
real manager and the real ``pixelfox`` command.

* Its first admin could not be made: ``users create`` had no way to send the cluster credential.
  ``PIXELFOX_CLUSTER__SECRET`` in the environment (and no API key) now is that credential.
* A node with another cluster secret was told "this method needs the cluster credential", though it
  sent one; it is now told the credential does not match the manager's secret.
* ``keys create NAME`` with no credential at all said "only admins create keys for other users".
* ``pixelfox --manager ADDR status`` (the flags before the command) was a usage error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.test_start_checks import SECRET, _env, manager  # noqa: F401  (manager: a fixture)

PASSWORD = "hand run admin pw 1"


def _pixelfox(tmp_path: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    """``pixelfox ARGS`` in ``tmp_path`` (no cluster folder) with no PIXELFOX_* setting but ``env``."""
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=tmp_path, input=stdin, capture_output=True,
                          text=True, timeout=60, check=False, env=_env(**env))


def test_the_cluster_secret_makes_the_first_admin_and_its_key(tmp_path: Path, manager: str) -> None:  # noqa: F811
    made = _pixelfox(tmp_path, "users", "create", "ops", "--admin", "--password-stdin", "--manager", manager,
                     stdin=PASSWORD + "\n", PIXELFOX_CLUSTER__SECRET=SECRET)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created admin ops ("), made.stdout
    key = _pixelfox(tmp_path, "keys", "create", "ops", "--manager", manager, PIXELFOX_CLUSTER__SECRET=SECRET)
    assert key.returncode == 0, key.stderr
    api_key = key.stdout.strip()
    assert api_key.startswith("pfx_"), key.stdout
    listed = _pixelfox(tmp_path, "users", "list", "--manager", manager, "--api-key", api_key)
    assert listed.returncode == 0, listed.stderr
    assert "ops" in listed.stdout and "admin" in listed.stdout
    wrong = _pixelfox(tmp_path, "users", "create", "eve", "--password-stdin", "--manager", manager,
                      stdin=PASSWORD + "\n", PIXELFOX_CLUSTER__SECRET="not-the-cluster-secret")
    assert wrong.returncode == 2 and "does not match the manager's cluster secret" in wrong.stderr, wrong.stderr
    assert "eve" not in _pixelfox(
        tmp_path, "users", "list", "--manager", manager, "--api-key", api_key).stdout


def test_keys_create_without_any_credential_says_none_was_given(tmp_path: Path, manager: str) -> None:  # noqa: F811
    res = _pixelfox(tmp_path, "keys", "create", "ops", "--manager", manager)
    assert res.returncode != 0
    line = res.stderr.strip().splitlines()[-1]
    assert "only admins" not in line, res.stderr
    assert "no API key given" in line and "--api-key" in line, res.stderr


def test_a_node_with_another_secret_is_told_its_credential_does_not_match(tmp_path: Path,
                                                                           manager: str) -> None:  # noqa: F811
    node = subprocess.Popen([sys.executable, "-m", "nodes.proc"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(
        PIXELFOX_CLUSTER__SECRET="another-cluster-secret", PIXELFOX_CLUSTER__MANAGER=manager,
        PIXELFOX_NODE_ID="procother", PIXELFOX_METRICS_PORT="-1", PIXELFOX_WORKERS="1"))
    try:
        _out, err = node.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        node.terminate()
        node.communicate(timeout=30)
        pytest.fail("a node with another cluster secret was not refused")
    assert node.returncode == 1, err
    assert err.strip().splitlines()[-1] == (
        "manager refused registration: the cluster credential sent does not match the manager's cluster secret "
        "(check that PIXELFOX_CLUSTER__SECRET is the same on every node)"), err


def test_manager_and_api_key_go_before_the_command_too(tmp_path: Path, manager: str) -> None:  # noqa: F811
    """``pixelfox --manager ADDR status`` (as docs/operations.md shows it) was argparse's "unrecognized arguments"."""
    made = _pixelfox(tmp_path, "--manager", manager, "users", "create", "first", "--admin", "--password-stdin",
                     stdin=PASSWORD + "\n", PIXELFOX_CLUSTER__SECRET=SECRET)
    assert made.returncode == 0, made.stderr
    api_key = _pixelfox(tmp_path, "--manager", manager, "keys", "create", "first",
                        PIXELFOX_CLUSTER__SECRET=SECRET).stdout.strip()
    listed = _pixelfox(tmp_path, "--manager", manager, "--api-key", api_key, "users", "list")
    assert listed.returncode == 0, listed.stderr
    assert "first" in listed.stdout
    status = _pixelfox(tmp_path, "--api-key", api_key, "--manager", manager, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("{"), status.stdout
