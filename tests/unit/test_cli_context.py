"""Where the CLI sends its calls: ``--manager`` / ``PIXELFOX_MANAGER`` must be real addresses; an
explicit API key is used even in a cluster folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pixelfox import errors
from pixelfox.cli.context import (
    STATE_FILE,
    check_address,
    choose_database_url,
    choose_storage_env,
    default_database_url,
    local_key_hint,
    resolve,
    storage_settings,
    target_flags,
)


@pytest.mark.parametrize("good", ["127.0.0.1:7000", "manager:1", "[::1]:65535", "m1:7000, m2:7001",
                                  "dns:///pixelfox-manager:7070", "pixelfox_manager.svc.local.:7070"])
def test_good_addresses_pass(good: str) -> None:
    assert check_address(good) == good


@pytest.mark.parametrize("bad", ["127.0.0.1:70000", "127.0.0.1:0", "127.0.0.1:abc", "127.0.0.1", ":7000",
                                 "m1:7000,m2", "::::", ":::1", "a b:80", "-m:80", "[::1:80", "[m1]:80"])
def test_bad_addresses_are_refused_with_the_bad_part(bad: str) -> None:
    with pytest.raises(errors.BadRequest, match=r"is not HOST:PORT \(a host name or an IP address") as exc:
        check_address(bad)
    assert f"--manager / PIXELFOX_MANAGER: {bad.split(',')[-1].strip()!r} is not" in str(exc.value)


def test_target_flags_carry_what_was_given_and_never_the_whole_key() -> None:
    """The end of the ``pixelfox uploads cancel ID`` line ``put`` prints after Ctrl-C."""
    key = "pfx_" + "AbCdEfGhIj" * 4 + "xyz"
    assert target_flags(None, None) == ""
    assert target_flags("[::1]:7070", None) == " --manager '[::1]:7070'"  # quoted: [..] is a shell pattern
    assert target_flags("m1:7000,m2:7001", key) == " --manager m1:7000,m2:7001 --api-key pfx_AbCdEf…"
    assert target_flags(None, "hunter2") == " --api-key KEY"  # not an API key's shape: not a character of it


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
    # the local admin's key goes beside the cluster credential: the manager then knows whose key this
    # command holds and refuses to disable that user (nodes.manager.service.ManagerService.key_holder)
    assert local.admin_metadata() == (("pixelfox-cluster-token", "s3cret"), ("authorization", "Bearer pfx_admin"))
    for ref in (resolve(None, "pfx_alice"), resolve("127.0.0.1:5000", "pfx_alice")):
        assert (ref.api_key, ref.secret) == ("pfx_alice", "")
        assert ref.admin_metadata() == (("authorization", "Bearer pfx_alice"),)
    monkeypatch.setenv("PIXELFOX_API_KEY", "pfx_bob")
    assert resolve(None, None).admin_metadata() == (("authorization", "Bearer pfx_bob"),)


def test_the_local_key_hint_tells_a_disabled_user_from_a_revoked_key(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The hint after the local admin's key was refused said "was revoked" also when its user had been
    disabled; that user is then named with the command that enables it, and a revoked key keeps its hint."""
    state = tmp_path / ".pixelfox" / "cluster.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"manager": "127.0.0.1:5000", "pid": os.getpid(), "secret": "s3cret",
                                 "admin_api_key": "pfx_admin"}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIXELFOX_MANAGER", raising=False)
    monkeypatch.delenv("PIXELFOX_API_KEY", raising=False)
    disabled = local_key_hint(None, None, errors.AccountDisabled.code)
    assert disabled == (f"hint: the local admin's API key in {state.resolve()} belongs to user admin, which is "
                        f"disabled; enable it with `pixelfox users enable admin` in {tmp_path.resolve()}, or pass "
                        "--api-key with a key of your own")
    assert local_key_hint(None, None).startswith(f"hint: the local admin's API key in {state.resolve()} was revoked")
    assert local_key_hint(None, None, errors.Unauthenticated.code) == local_key_hint(None, None)
    assert local_key_hint(None, "pfx_mine", errors.AccountDisabled.code) == ""  # not the local key: no hint


def test_up_keeps_the_database_the_last_start_recorded(tmp_path: Path) -> None:
    """After a move to PostgreSQL (one start with PIXELFOX_DATABASE__URL), a plain ``up`` stays on it and
    says so, password hidden; an environment naming another database wins, with a warning."""
    state = tmp_path / ".pixelfox"
    state.mkdir()
    default = default_database_url(state)
    assert choose_database_url(state, "") == (default, "")  # a fresh folder: its own SQLite file, quietly
    pg = "postgresql+asyncpg://pf:s3cret@db.example:5432/pf"
    (state / STATE_FILE).write_text(json.dumps({"database_url": pg}))
    url, note = choose_database_url(state, "")
    assert url == pg
    assert note == ("database: postgresql+asyncpg://pf:***@db.example:5432/pf (from the last start; set "
                    "PIXELFOX_DATABASE__URL to change)")
    assert choose_database_url(state, pg) == (pg, "")  # the same as last time: nothing to say
    url, note = choose_database_url(state, default)  # back to the SQLite file, on purpose
    assert url == default
    assert note.startswith(f"warning: PIXELFOX_DATABASE__URL names {default}, but the last start used "
                           "postgresql+asyncpg://pf:***@db.example:5432/pf") and "s3cret" not in note
    (state / STATE_FILE).write_text(json.dumps({"database_url": default}))
    assert choose_database_url(state, "") == (default, "")
    (state / STATE_FILE).write_text("{half a file")
    assert choose_database_url(state, "") == (default, "")


def test_up_keeps_the_s3_pools_the_last_start_recorded(tmp_path: Path) -> None:
    """After a start with PIXELFOX_BACKEND=s3, a plain ``up`` keeps S3 (its settings from ``cluster.json``)
    and says so; it used to go back to the empty folders. A ``cluster.json`` whose pools were in S3 but
    that does not hold their settings stops the start with the variables to set."""
    state = tmp_path / ".pixelfox"
    state.mkdir()
    assert choose_storage_env(state, {}) == ({}, "")  # a fresh folder: its folders, quietly
    assert choose_storage_env(state, {"PIXELFOX_BACKEND": "s3"}) == ({"PIXELFOX_BACKEND": "s3"}, "")
    s3 = {"PIXELFOX_BACKEND": "s3", "PIXELFOX_S3__ENDPOINT_URL": "http://s3.example:8333",
          "PIXELFOX_S3__BUCKET": "pics", "PIXELFOX_S3__SECRET_ACCESS_KEY": "k3y"}
    (state / STATE_FILE).write_text(json.dumps({"storage_env": s3}))
    env, note = choose_storage_env(state, {"PATH": "/bin", "PIXELFOX_S3__REGION": "eu-west-1"})
    assert env == {**s3, "PIXELFOX_S3__REGION": "eu-west-1"}  # the environment's own settings win
    assert note == ("storage: s3 bucket pics at http://s3.example:8333 (from the last start; set "
                    "PIXELFOX_BACKEND to change)") and "k3y" not in note
    assert choose_storage_env(state, s3) == (s3, "")
    env, note = choose_storage_env(state, {"PIXELFOX_BACKEND": "fs"})  # back to the folders, on purpose
    assert env == {"PIXELFOX_BACKEND": "fs"}
    assert note.startswith("warning: PIXELFOX_BACKEND=fs, but the last start stored images in s3")
    (state / STATE_FILE).write_text(json.dumps({"pools": {"storage1": {"backend": "s3", "bucket": "pics"}}}))
    with pytest.raises(SystemExit, match="set PIXELFOX_BACKEND=s3 and the PIXELFOX_S3__"):
        choose_storage_env(state, {})
    (state / STATE_FILE).write_text(json.dumps({"storage_env": {}, "pools": {"storage1": {"backend": "fs"}}}))
    assert choose_storage_env(state, {}) == ({}, "")


def test_storage_settings_keep_aws_credentials_only_for_s3(tmp_path: Path) -> None:
    """Keys given as ``AWS_*`` alone (the SDK's own variables) are recorded with an S3 backend, so a
    later ``up`` without them still reaches the bucket; with the folders they are never kept."""
    env = {"PATH": "/bin", "PIXELFOX_BACKEND": "S3", "AWS_ACCESS_KEY_ID": "local",
           "AWS_SECRET_ACCESS_KEY": "localsecret", "AWS_REGION": "eu-west-1", "AWS_PAGER": "",
           "AWS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt"}
    assert storage_settings(env) == {"PIXELFOX_BACKEND": "S3", "AWS_ACCESS_KEY_ID": "local",
                                     "AWS_SECRET_ACCESS_KEY": "localsecret", "AWS_REGION": "eu-west-1"}
    assert storage_settings({**env, "PIXELFOX_BACKEND": "fs"}) == {"PIXELFOX_BACKEND": "fs"}
    assert storage_settings({"AWS_ACCESS_KEY_ID": "local"}) == {}
    state = tmp_path / ".pixelfox"
    state.mkdir()
    (state / STATE_FILE).write_text(json.dumps({"storage_env": storage_settings(env)}))
    chosen, note = choose_storage_env(state, {"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "rotated"})
    assert chosen == {"PIXELFOX_BACKEND": "S3", "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "rotated",
                      "AWS_REGION": "eu-west-1"} and "secret" not in note


def test_import_list_takes_subfolders_and_leaves_hidden_entries_out(tmp_path: Path) -> None:
    from pixelfox.cli.main import import_list

    (tmp_path / "DCIM" / "100CAM").mkdir(parents=True)
    (tmp_path / ".cache" / "deep").mkdir(parents=True)
    for rel in ("a.jpg", "DCIM/100CAM/b.jpg", "DCIM/100CAM/.DS_Store", ".cache/deep/c.jpg", ".hidden.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "DCIM" / "loop").symlink_to(tmp_path)  # a symlinked folder is not followed
    (tmp_path / "link.jpg").symlink_to(tmp_path / "a.jpg")  # a symlinked file counts
    # entries that are no files are counted as left out (they were left out without a word)
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "self.jpg").symlink_to(tmp_path / "self.jpg")  # a symlink loop
    os.mkfifo(tmp_path / "pipe.jpg")
    files, hidden, unreadable, other = import_list(tmp_path)
    assert [str(p.relative_to(tmp_path)) for p in files] == ["DCIM/100CAM/b.jpg", "a.jpg", "link.jpg"]
    assert (hidden, unreadable) == (3, 0)  # .cache, .hidden.jpg, .DS_Store
    assert other == 4  # DCIM/loop (not followed), dangling.jpg, self.jpg, pipe.jpg


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder: run as a user to see one refused")
def test_import_list_leaves_an_unreadable_subfolder_out_and_counts_it(tmp_path: Path) -> None:
    from pixelfox.cli.main import import_list

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "lost+found").mkdir(mode=0o000)  # a USB stick's root-only folder: the import still runs
    try:
        files, hidden, unreadable, other = import_list(tmp_path)
    finally:
        (tmp_path / "lost+found").chmod(0o700)
    assert ([p.name for p in files], hidden, unreadable, other) == (["a.jpg"], 0, 1, 0)


@pytest.mark.parametrize("pasted", ["pfx_AbCdEf…", "pfx_AbCdEf...", "KEY"])
def test_a_key_as_pixelfox_prints_it_is_refused_up_front(pasted: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The cancel line after Ctrl-C shows ``--api-key pfx_AbCdEf…``; pasted as is, the server only said
    "invalid API key". It is refused before any call, by flag or environment, saying to give the whole key."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIXELFOX_API_KEY", raising=False)
    with pytest.raises(errors.BadRequest) as exc:
        resolve("127.0.0.1:5000", pasted)
    form = "placeholder" if pasted == "KEY" else "shortened form"
    assert str(exc.value) == (f"--api-key / PIXELFOX_API_KEY: {pasted!r} is the {form} pixelfox prints in place "
                              "of a key; give the whole key")
    monkeypatch.setenv("PIXELFOX_API_KEY", pasted)
    with pytest.raises(errors.BadRequest, match="give the whole key"):
        resolve("127.0.0.1:5000", None)
    whole = "pfx_" + "AbCdEfGhIj" * 4
    assert resolve("127.0.0.1:5000", whole).api_key == whole


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_api_key_is_refused_not_the_local_admins(empty: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--api-key ""`` or ``PIXELFOX_API_KEY=`` (a script's unset ``$KEY``) fell back to the local admin's key
    in a cluster folder: the upload was quietly the admin's (a fresh tester's find). Refused, naming which."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIXELFOX_API_KEY", raising=False)
    with pytest.raises(errors.BadRequest, match=r"^--api-key is empty: give an API key"):
        resolve("127.0.0.1:5000", empty)
    monkeypatch.setenv("PIXELFOX_API_KEY", empty)
    with pytest.raises(errors.BadRequest, match=r"^PIXELFOX_API_KEY is empty: give an API key"):
        resolve("127.0.0.1:5000", None)
    whole = "pfx_" + "AbCdEfGhIj" * 4
    assert resolve("127.0.0.1:5000", whole).api_key == whole  # the flag beats an empty variable
