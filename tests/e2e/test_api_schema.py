"""Schemathesis against ``/api/v1/openapi.json`` on the running cluster: a bounded number of
generated requests per operation (``PIXELFOX_SCHEMATHESIS_EXAMPLES``, default 20), no 5xx."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

EXAMPLES = os.environ.get("PIXELFOX_SCHEMATHESIS_EXAMPLES", "20")


def test_openapi_document_is_openapi3(cluster: Any) -> None:
    with urllib.request.urlopen(f"{cluster.web_url}/api/v1/openapi.json", timeout=10) as r:
        doc = json.loads(r.read())
    assert doc["openapi"].startswith("3.")
    assert {"/api/v1/images", "/api/v1/images/{slug}", "/api/v1/albums", "/api/v1/albums/{slug}", "/api/v1/me",
            "/api/v1/uploads", "/api/v1/uploads/{id}", "/api/v1/uploads/{id}/ticket",
            "/api/v1/delete/{slug}/{owner}/{token}",
            "/api/1/upload"} == set(doc["paths"])


def test_schemathesis_no_server_errors(cluster: Any, tmp_path: Path) -> None:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("schemathesis is not installed (pip install -e '.[test]')")
    name = f"st_{uuid.uuid4().hex[:10]}"
    r = cluster.pixelfox("users", "create", name, "--password-stdin", input="schemathesis pw 123\n")
    assert r.returncode == 0, r.stderr
    r = cluster.pixelfox("keys", "create", name)
    assert r.returncode == 0, r.stderr
    key = next(w for w in r.stdout.split() if w.startswith("pfx_"))
    report = tmp_path / "junit.xml"
    proc = subprocess.run(
        [exe, "run", f"{cluster.web_url}/api/v1/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", EXAMPLES, "--workers", "1", "--header", f"Authorization: Bearer {key}",
         "--request-timeout", "60", "--seed", "5",
         "--report", "junit", "--report-junit-path", str(report), "--warnings", "off"],
        capture_output=True, text=True, timeout=400, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "not_a_server_error" in out or report.exists(), out[-3000:]
