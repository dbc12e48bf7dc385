"""Where the CLI sends its calls: ``--manager`` / ``PIXELFOX_MANAGER`` must be real addresses; an
explicit API key is used even in a cluster folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pixelfox.cli.context import check_address, resolve


@pytest.mark.parametrize("good", ["127.0.0.1:7000", "manager:1", "[::1]:65535", "m1:7000, m2:7001"])
def test_good_addresses_pass(good: str) -> None:
    assert check_address(good) == good


@pytest.mark.parametrize("bad", ["127.0.0.1:70000", "127.0.0.1:0", "127.0.0.1:abc", "127.0.0.1", ":7000",
                                 "m1:7000,m2"])
def test_bad_addresses_are_refused_with_the_bad_part(bad: str) -> None:
    with pytest.raises(SystemExit, match="is not HOST:PORT with a port from 1 to 65535") as exc:
        check_address(bad)
    assert repr(bad.split(",")[-1].strip()) in str(exc.value) or repr(bad) in str(exc.value)


def test_an_explicit_api_key_beats_the_local_admin_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a cluster folder the local admin's secret is used only when no key was given: a user's key
    passed by flag or environment speaks for that user (an operator checking what a user may do)."""
    state = tmp_path / ".pixelfox" / "cluster.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"manager": "127.0.0.1:5000", "pid": os.getpid(), "secret": "s3cret",
                                 "admin_api_key": "pfx_admin", "web_url": "http://127.0.0.1:8080"}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIXELFOX_MANAGER", raising=False)
    monkeypatch.delenv("PIXELFOX_API_KEY", raising=False)
    local = resolve(None, None)
    assert (local.api_key, local.secret) == ("pfx_admin", "s3cret")
    assert dict(local.admin_metadata())["pixelfox-cluster-token"] == "s3cret"
    for ref in (resolve(None, "pfx_alice"), resolve("127.0.0.1:5000", "pfx_alice")):
        assert (ref.api_key, ref.secret) == ("pfx_alice", "")
        assert ref.admin_metadata() == (("authorization", "Bearer pfx_alice"),)
    monkeypatch.setenv("PIXELFOX_API_KEY", "pfx_bob")
    assert resolve(None, None).admin_metadata() == (("authorization", "Bearer pfx_bob"),)
