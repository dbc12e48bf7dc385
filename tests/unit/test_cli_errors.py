"""The CLI says what went wrong in one line, with a non-zero exit, for errors that are the user's or
the machine's (a bad flag, a database that refuses, an unreachable server): never a traceback.
Real subprocesses, no cluster needed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pixelfox import errors
from pixelfox.cli.launcher import free_port


def pixelfox(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("args", "code", "says"), [
    (("up", "--web", "0"), 2, "argument --web: 0 is out of range: give a whole number from 1 to 32"),
    (("up", "--storage", "-1"), 2, "argument --storage: -1 is out of range"),
    (("up", "--proc", "two"), 2, "argument --proc: 'two' is not a whole number"),
    (("jobs", "--limit", "0"), 2, "argument --limit: 0 is out of range: give a whole number from 1 to 1000"),
    (("reprocess", "--all", "--recipe", "-1"), 2, "argument --recipe: -1 is out of range"),
    (("jobs", "--limit", "\uff12"), 2, "argument --limit: '\uff12' is not a whole number"),  # full-width 2
    (("jobs", "--limit", "1_0"), 2, "argument --limit: '1_0' is not a whole number"),
    (("up", "--timeout", "nan"), 2, "argument --timeout: nan is out of range: give a number of seconds of at least 1"),
    (("up", "--timeout", "0"), 2, "argument --timeout: 0 is out of range"),
    (("reprocess", "x", "--after", "01ARZ3NDEKTSV4RRFFQ69G5FAV"), 2, "--after goes with --all"),
    (("reprocess", "--all", "--after", "NOT-AN-ID"), 2,  # was taken: it matched nothing, "queued 0"
     "argument --after: 'NOT-AN-ID' is not an image id"),
    (("reprocess",), 2, "pixelfox: reprocess: name images (SLUG...) or pass --all"),  # exited 1
    # the slug was ignored without a word and every image queued
    (("reprocess", "--all", "nosuchslug"), 2, "pixelfox: reprocess: name images (SLUG...) or pass --all, not both"),
    (("reprocess", "x", "--rate", "0"), 2,  # was taken as 0.1 per second
     "argument --rate: 0 is out of range: give a number of images per second from 0.1 to 1000"),
    (("reprocess", "x", "--rate=-5"), 2, "argument --rate: -5 is out of range"),
    (("reprocess", "x", "--rate", "nan"), 2, "argument --rate: nan is out of range"),
    (("reprocess", "x", "--rate", "inf"), 2, "argument --rate: inf is out of range"),
    (("reprocess", "x", "--rate", "1e10"), 2, "argument --rate: 1e10 is out of range"),  # int32 batch limit
    (("reprocess", "x", "--rate", "\uff12"), 2, "argument --rate: '\uff12' is not a number of images per second"),
    (("reprocess", "x", "--rate", "1_0"), 2, "argument --rate: '1_0' is not a number of images per second"),
    (("tiers", "move", "--older-than", "\uff15"), 2, "argument --older-than: '\uff15' is not a number of days"),
    # checked as the manager checks it, before any file is sent (it was one refusal per file, exit 1)
    (("put", "--title", "t" * 256, "a.png"), 2, "argument --title: title longer than 255 characters"),
    (("put", "--title", "a\x1bb", "a.png"), 2, "argument --title: title contains a control character (U+001B)"),
    # was a traceback (OverflowError)
    (("put", "--limit-rate", "1e300G", "a.png"), 2, "argument --limit-rate: '1e300G' is too large a rate"),
    # every rate under 1K says the same (-1 said "give a rate of at least 0", and 0 then was refused)
    (("put", "--limit-rate", "-1", "a.png"), 2, "argument --limit-rate: '-1' is not a rate of at least 1K"),
    (("put", "--limit-rate", "0", "a.png"), 2, "argument --limit-rate: '0' is not a rate of at least 1K"),
    # an unknown unit is named as such (it said "is not a rate of at least 1K")
    (("put", "--limit-rate", "10T", "a.png"), 2, "argument --limit-rate: '10T': a rate's unit is K, M or G"),
    (("put", "--retry-for", "-1", "a.png"), 2,
     "argument --retry-for: -1 is out of range: give a number of seconds from 0 to 3600"),
    (("put", "--retry-for", "nan", "a.png"), 2, "argument --retry-for: nan is out of range"),
    # was sent to the manager, which said "no such upload"
    (("uploads", "cancel", ""), 2, "argument id: '' is not an upload id"),
    (("uploads", "cancel", " \t", "--manager", "127.0.0.1:1"), 2, "argument id: ' \\t' is not an upload id"),
])
def test_bad_numbers_are_usage_errors(tmp_path: Path, args: tuple[str, ...], code: int, says: str) -> None:
    res = pixelfox(*args, cwd=tmp_path)
    assert res.returncode == code and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / ".pixelfox").exists()  # refused before anything started


@pytest.mark.parametrize(("args", "line"), [
    (("nodes",), "pixelfox: missing a nodes command: maintenance, forget (see `pixelfox nodes --help`)"),
    (("nodes", "bogus"), "pixelfox: a nodes command: invalid choice: 'bogus' (choose from 'maintenance', 'forget') "
                         "(see `pixelfox nodes --help`)"),
    (("tiers",), "pixelfox: missing a tiers command: move (see `pixelfox tiers --help`)"),
    (("--bogus",), "pixelfox: missing a command: up, down, put, status, users, keys, jobs, reprocess, uploads, nodes, "
                   "migrate-db, backup, restore, upgrade-db, tiers, migrate-store, scrub (see `pixelfox --help`)"),
    (("up", "--upload", "0"), "pixelfox: argument --upload: 0 is out of range: give a whole number from 1 to 32 "
                              "(see `pixelfox up --help`)"),
    (("jobs", "--state", "bogus"), "pixelfox: argument --state: invalid choice: 'bogus' (choose from 'dead', "
                                   "'delayed', 'queued', 'running') (see `pixelfox jobs --help`)"),
    (("migrate-db", "--batch", "0"), "pixelfox: argument --batch: 0 is out of range: give a whole number of at "
                                     "least 1 (see `pixelfox migrate-db --help`)"),
    # an empty name was "the caller's own keys": unauthenticated, with a hint that the local key was revoked
    (("keys", "list", "--user", ""), "pixelfox: argument --user: a user name cannot be empty "
                                     "(see `pixelfox keys list --help`)"),
    (("keys", "create", " "), "pixelfox: argument name: a user name cannot be empty "
                              "(see `pixelfox keys create --help`)"),
    (("users", "disable", ""), "pixelfox: argument name: a user name cannot be empty "
                               "(see `pixelfox users disable --help`)"),
    (("keys", "revoke", ""), "pixelfox: argument id: a key id cannot be empty (see `pixelfox keys revoke --help`)"),
])
def test_usage_errors_are_one_line_with_a_hint(tmp_path: Path, args: tuple[str, ...], line: str) -> None:
    """argparse printed its usage block, then ``pixelfox nodes: error: the following arguments are
    required: nodes_cmd``: now one line in words a user knows, exit 2."""
    res = pixelfox(*args, cwd=tmp_path)
    assert (res.returncode, res.stderr, res.stdout) == (2, line + "\n", "")


DASH_HINT = ("-dash.png starts with '-', so it was read as an option: to pass a file of that name, write "
             "./-dash.png, or put it after `--`: `pixelfox put -- -dash.png`")


@pytest.mark.parametrize(("args", "line"), [
    (("put", "-dash.png"), f"pixelfox: the following arguments are required: FILE; {DASH_HINT} "
                           "(see `pixelfox put --help`)"),
    (("put", "a.png", "-dash.png"), f"pixelfox: unrecognized arguments: -dash.png; {DASH_HINT} "
                                    "(see `pixelfox --help`)"),
    (("put", "--json", "a.png", "-dash.png", "--wait"), f"pixelfox: unrecognized arguments: -dash.png; {DASH_HINT} "
                                                        "(see `pixelfox --help`)"),
    (("put", "a.png", "-nofile.png"), "pixelfox: unrecognized arguments: -nofile.png (see `pixelfox --help`)"),
])
def test_a_file_name_starting_with_a_dash_says_how_to_pass_it(tmp_path: Path, args: tuple[str, ...],
                                                              line: str) -> None:
    """``pixelfox put -dash.png`` of a file that is there said only "the following arguments are required:
    FILE" (or "unrecognized arguments"), never how to pass such a name; a mistyped option that names no
    file is left as argparse says it."""
    (tmp_path / "-dash.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    res = pixelfox(*args, cwd=tmp_path)
    assert (res.returncode, res.stderr, res.stdout) == (2, line + "\n", "")


@pytest.mark.parametrize(("args", "line"), [
    (("migrate-db", "--target", "sqlite+aiosqlite:///x.db"),
     "pixelfox: no database given: pass --source URL (or run in a `pixelfox up` folder) "
     "(see `pixelfox migrate-db --help`)"),
    (("backup", "b.jsonl"), "pixelfox: no database given: pass --db URL (or run in a `pixelfox up` folder) "
                            "(see `pixelfox backup --help`)"),
])
def test_no_database_outside_a_cluster_folder_is_a_usage_error(tmp_path: Path, args: tuple[str, ...],
                                                                 line: str) -> None:
    """A missing --source / --db outside a cluster folder exited 1, as if the machine were at fault."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}
    res = subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert (res.returncode, res.stderr, res.stdout) == (2, line + "\n", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_a_refused_migrate_db_leaves_no_target_file(tmp_path: Path) -> None:
    """A new SQLite target is made (mode 0600) before the checks: a refusal left it behind, empty
    (0 bytes). Now it goes again; a copy that runs keeps it."""
    notes = tmp_path / "notes.db"
    notes.write_text("not a database: a text file given as --source by mistake\n" * 4)
    target = tmp_path / "new.db"
    res = pixelfox("migrate-db", "--source", f"sqlite+aiosqlite:///{notes}", "--target",
                   f"sqlite+aiosqlite:///{target}", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.splitlines()[-1] == (
        f"pixelfox: cannot use the database sqlite+aiosqlite:///{notes}: file is not a database (unavailable)"
    ), res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]
    source = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    assert pixelfox("upgrade-db", "--db", source, cwd=tmp_path).returncode == 0
    res = pixelfox("migrate-db", "--source", source, "--target", f"sqlite+aiosqlite:///{target}", cwd=tmp_path)
    assert res.returncode == 0 and '"verified": true' in res.stdout, res.stderr
    assert target.stat().st_size > 0 and target.stat().st_mode & 0o777 == 0o600


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    res = pixelfox("--version", cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"pixelfox {version('pixelfox')}\n", "")


def test_database_errors_are_one_line(tmp_path: Path) -> None:
    """Each problem is one ``pixelfox:`` line after the lines that say which databases are used."""
    source = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    res = pixelfox("migrate-db", "--source", source, "--target", "foo://bar", cwd=tmp_path)
    assert res.returncode == 2 and "no SQLite database at" in res.stderr.splitlines()[-1], res.stderr
    assert pixelfox("upgrade-db", "--db", source, cwd=tmp_path).returncode == 0
    res = pixelfox("migrate-db", "--source", source, "--target", "foo://bar", cwd=tmp_path)
    last = res.stderr.splitlines()[-1]
    assert (res.returncode, last) == (2, "pixelfox: foo://bar: only PostgreSQL (postgresql+asyncpg://USER[:PASSWORD]@"
                                         "HOST[:PORT]/DATABASE) and SQLite (sqlite+aiosqlite:///PATH) are supported "
                                         "(bad-request)"), res.stderr
    closed = "postgresql+asyncpg://nobody@127.0.0.1:1/none"  # port 1: nothing listens, refused at once
    res = pixelfox("migrate-db", "--source", source, "--target", closed, cwd=tmp_path)
    last = res.stderr.splitlines()[-1]
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert last == (f"pixelfox: cannot use the database {closed}: connection refused: no database server listens on "
                    "127.0.0.1:1 (unavailable)"), res.stderr
    assert all(line.startswith("pixelfox: ") for line in res.stderr.splitlines()), res.stderr


def test_an_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    """tiers move outside a cluster folder talks to the Redis of the environment (port 1 here)."""
    db = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    assert pixelfox("upgrade-db", "--db", db, cwd=tmp_path).returncode == 0
    env_run = subprocess.run([sys.executable, "-m", "pixelfox", "tiers", "move", "--dry-run"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60, check=False,
                             env={**os.environ, "PIXELFOX_DATABASE__URL": db,
                                  "PIXELFOX_REDIS__URL": "redis://127.0.0.1:1/0"})
    last = env_run.stderr.splitlines()[-1]
    assert env_run.returncode == 1 and last.startswith("pixelfox: Redis error: "), env_run.stderr
    assert "Traceback" not in env_run.stderr



def test_options_before_a_subcommand_are_kept() -> None:
    """``pixelfox uploads --api-key K cancel ID`` ran as the local admin: the ``cancel`` parser's
    own ``--api-key`` (default None) overwrote the one given to ``uploads``."""
    from pixelfox.cli.main import build_parser

    parse = build_parser().parse_args
    assert parse(["uploads", "--api-key", "K", "cancel", "X"]).api_key == "K"
    assert parse(["uploads", "cancel", "X", "--api-key", "K2"]).api_key == "K2"
    assert parse(["jobs", "--manager", "M:1", "retry", "x"]).manager == "M:1"
    assert (parse(["uploads"]).manager, parse(["uploads"]).api_key) == (None, None)


@pytest.mark.parametrize(("error", "status"), [
    (errors.BadRequest, 2), (errors.CorruptImage, 2), (errors.NotFound, 2), (errors.AlreadyExists, 2),
    (errors.Forbidden, 2), (errors.Unauthenticated, 2), (errors.Conflict, 2), (errors.OffsetMismatch, 2),
    (errors.Unavailable, 1), (errors.NoNodeAvailable, 1), (errors.Timeout, 1), (errors.PixelfoxError, 1),
    (errors.ResourceExhausted, 1), (errors.StorageFull, 1), (errors.QuotaExceeded, 1), (errors.UploadBusy, 1),
    (errors.ChecksumMismatch, 1),  # DATA_LOSS: the bytes changed on the way, not the caller's input
])
def test_exit_status_says_whose_fault_an_error_is(error: type[errors.PixelfoxError], status: int) -> None:
    """2: the caller asked for something wrong; 1: the cluster, the network or the machine failed."""
    assert error().exit_status == status


@pytest.mark.parametrize("address", ["not-a-host:xx", "::::", ":::1", "a b:80", "[::1:80", "127.0.0.1:1,[::1]:2"])
def test_a_malformed_manager_address_is_a_usage_error(tmp_path: Path, address: str) -> None:
    """It exited 1 with no ``pixelfox:`` (a SystemExit), or went to gRPC (``a b:80``) and came back as
    its resolver's text."""
    res = pixelfox("status", "--manager", address, cwd=tmp_path)
    lines = res.stderr.splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"pixelfox: --manager / PIXELFOX_MANAGER: {address!r} "), lines
    assert lines[0].endswith("(bad-request)"), lines


def test_a_manager_that_refuses_the_connection_is_one_line_naming_it(tmp_path: Path) -> None:
    """Nothing listens on a free port of 127.0.0.1: the connection is refused at once. Every command
    that calls the manager says so in one line with exit 1 (it was gRPC's own text, with exit 2);
    ``put`` too, once, without trying the other files (it said "✗ FILE: cannot reach ..." for each)."""
    address = f"127.0.0.1:{free_port()}"
    for args in (("status",), ("jobs",), ("uploads",), ("nodes", "maintenance", "upload1")):
        res = pixelfox(*args, "--manager", address, cwd=tmp_path)
        assert (res.returncode, res.stderr) == (1, (
            f"pixelfox: cannot reach the manager at {address} (connection refused); start it with `pixelfox up`, "
            "or check --manager / PIXELFOX_MANAGER (unavailable)\n")), (args, res.stderr)
    photos = [tmp_path / f"{n}.png" for n in "abc"]
    for photo in photos:
        photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    for json_flag in ((), ("--json",)):
        res = pixelfox("put", *json_flag, "--manager", address, "--api-key", "pfx_" + "k" * 43, *map(str, photos),
                       cwd=tmp_path)
        assert (res.returncode, res.stdout, res.stderr) == (1, "", (
            f"pixelfox: cannot reach the manager at {address} (connection refused); start it with `pixelfox up`, "
            "or check --manager / PIXELFOX_MANAGER (unavailable)\n")), res.stderr


def test_a_manager_that_gives_no_answer_is_one_line_naming_it(tmp_path: Path) -> None:
    """A socket that takes the connection and never answers, as a manager stopped with SIGSTOP does (the
    kernel still accepts): ``status`` gives up after the 5 s connect timeout naming the manager's address,
    with what to check, in one line, exit 1. It said only "pixelfox: Deadline Exceeded (timeout)"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        res = pixelfox("status", "--manager", address, cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (1, "", (
        f"pixelfox: the manager at {address} did not answer (no connection in 5 s); it is running but "
        "stopped (SIGSTOP: `kill -CONT PID`), hung or overloaded; see its log, or check --manager / "
        "PIXELFOX_MANAGER (not-answering)\n")), res.stderr


def test_admin_commands_without_a_credential_keep_their_own_answers(tmp_path: Path) -> None:
    """``users`` and ``keys`` refuse a call with no credential at all before calling (exit 2); ``nodes``
    calls anyway, so an unreachable manager is what it says (exit 1). One helper serves both
    (:func:`pixelfox.cli.context.call_manager`): a merge must keep each one's answer."""
    address = f"127.0.0.1:{free_port()}"
    for args in (("users", "list"), ("users", "disable", "bob"), ("keys", "revoke", "x"), ("keys", "list", "--user",
                                                                                            "bob")):
        res = pixelfox(*args, "--manager", address, cwd=tmp_path)
        assert (res.returncode, res.stderr) == (2, (
            "pixelfox: no API key given: pass --api-key (or set PIXELFOX_API_KEY) with an admin's key, or set "
            "PIXELFOX_CLUSTER__SECRET to the cluster's secret (unauthenticated)\n")), (args, res.stderr)
    for args in (("nodes", "forget", "upload1"), ("nodes", "maintenance", "upload1", "--off")):
        res = pixelfox(*args, "--manager", address, cwd=tmp_path)
        assert (res.returncode, res.stderr) == (1, (
            f"pixelfox: cannot reach the manager at {address} (connection refused); start it with `pixelfox up`, "
            "or check --manager / PIXELFOX_MANAGER (unavailable)\n")), (args, res.stderr)


def test_no_cluster_here_is_one_pixelfox_line(tmp_path: Path) -> None:
    res = pixelfox("status", cwd=tmp_path)
    assert (res.returncode, res.stderr.splitlines()[0][:30]) == (1, "pixelfox: no cluster found: ru"), res.stderr


def test_tiers_move_in_the_folder_of_a_stopped_cluster_says_so(tmp_path: Path) -> None:
    """It printed ``pixelfox: Redis error: Error 111 connecting to 127.0.0.1:...``: the stopped cluster's
    Redis is gone with it. Now the line the other commands print there."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # the pid of a `pixelfox up` that has exited
    (tmp_path / ".pixelfox").mkdir()
    (tmp_path / ".pixelfox" / "cluster.json").write_text(
        f'{{"pid": {dead}, "manager": "127.0.0.1:{free_port()}", "redis_url": "redis://127.0.0.1:{free_port()}/0", '
        '"secret": "s" }')
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELFOX_")}
    res = subprocess.run([sys.executable, "-m", "pixelfox", "tiers", "move", "--dry-run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (res.returncode, res.stderr) == (1, (
        f"pixelfox: the cluster in {tmp_path} is not running: start it with `pixelfox up` there, or set "
        "PIXELFOX_REDIS__URL and PIXELFOX_DATABASE__URL for another cluster\n")), res.stderr


def test_a_manager_name_that_does_not_resolve_is_named(tmp_path: Path) -> None:
    """``.invalid`` never resolves (RFC 6761). One address goes to gRPC's resolver; several are resolved
    once by the CLI (``pixelfox.grpcx.multi``), whose error said only "Name or service not known"."""
    one = pixelfox("status", "--manager", "nohost.invalid:7070", cwd=tmp_path)
    assert one.returncode == 1, one.stderr
    assert one.stderr.startswith("pixelfox: cannot reach the manager at nohost.invalid:7070 ("), one.stderr
    two = pixelfox("status", "--manager", "nohost.invalid:7070,127.0.0.1:7071", cwd=tmp_path)
    assert two.returncode == 1, two.stderr
    assert two.stderr.startswith("pixelfox: cannot resolve the host name 'nohost.invalid': "), two.stderr
