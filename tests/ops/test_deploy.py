"""The deployment files in ``deploy/``: Prometheus rules (promtool), nginx config (nginx -t), YAML shape."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed (Debian package `prometheus`, in scripts/install DEB_PACKAGES)")
    return exe


def test_alert_rules_check_and_unit_tests() -> None:
    exe = promtool()
    d = DEPLOY / "prometheus"
    res = subprocess.run([exe, "check", "rules", "alerts.yml"], cwd=d, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout
    res = subprocess.run([exe, "test", "rules", "alerts_test.yml"], cwd=d, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([exe, "check", "config", "prometheus.yml"], cwd=d, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_alert_names_cover_the_issue() -> None:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"PixelfoxNodeDown", "PixelfoxStorageUnavailable", "PixelfoxSessionStoreUnreachable",
            "PixelfoxQueueBacklog", "PixelfoxHighCpu", "PixelfoxHighMemory"} <= names
