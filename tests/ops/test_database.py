"""Metadata database at scale: Alembic migrations on SQLite and a real PostgreSQL, the main
upload flow on PostgreSQL, ``pixelfox migrate-db`` (SQLite -> PostgreSQL, resumable, verified)
and a backup/restore drill."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text

from pixelfox.cli.launcher import Counts, LocalCluster, free_port
from pixelfox.config import DatabaseSettings
from pixelfox.db import migrate, rows
from pixelfox.db.backup import BACKUP_FORMAT
from pixelfox.db.engine import make_engine
from tests.conftest import ClusterHandle
from tests.ops.conftest import cli, start_cluster, status
from tests.ops.pg import Postgres

pytestmark = pytest.mark.e2e


async def _tables(url: str) -> set[str]:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _scripts_match_models(url: str) -> None:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        await migrate.migrate_only(engine)  # the scripts alone, no create_all safety net
        assert await migrate.current_revision(engine) == migrate.head_revision()
        diff = await migrate.drift(engine)
        assert diff == [], f"models changed without an Alembic migration: {diff}"
        await migrate.downgrade(engine, "base")
        assert await _tables(url) <= {"alembic_version"}
        # two managers starting at once against the same empty database
        other = make_engine(DatabaseSettings(url=url))
        try:
            results = await asyncio.gather(migrate.prepare(engine), migrate.prepare(other))
        finally:
            await other.dispose()
        assert sorted(results) in (["created", "current"], ["created", "created"]), results
        assert await migrate.drift(engine) == []
    finally:
        await engine.dispose()


def test_migrations_on_sqlite(tmp_path: Path) -> None:
    asyncio.run(_scripts_match_models(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"))


def test_managers_starting_at_once_on_one_sqlite_file(tmp_path: Path) -> None:
    """Six processes prepare one empty SQLite file at once: one creates it, all succeed.

    SQLite runs DDL outside the transaction, so without the schema lock a second manager
    could see half the tables and fail (a CI run lost a manager at start-up that way).
    """
    url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    code = "\n".join([
        "import asyncio, sys",
        "from pixelfox.config import DatabaseSettings",
        "from pixelfox.db.engine import make_engine",
        "from pixelfox.db.migrate import prepare",
        "print(asyncio.run(prepare(make_engine(DatabaseSettings(url=sys.argv[1])))))"])
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-800:] for _, err in outs]
    assert sorted(out.strip() for out, _ in outs) == ["created"] + ["current"] * 5
    assert {"images", "users", "alembic_version"} <= asyncio.run(_tables(url))


def test_migrations_on_postgres(postgres: Postgres) -> None:
    asyncio.run(_scripts_match_models(postgres.create_db("migrations")))


async def _node_index_after_upgrade(url: str) -> None:
    """Migration 0008: a database at 0007 with a location row gets ``ix_object_locations_node_id`` on
    (node_id) by ``upgrade``, keeps its row, and loses the index again on ``downgrade`` to 0007; a new
    database (``prepare``'s ``create_all``) has it too. On SQLite a node's rows are then searched
    through it, not scanned."""
    name = "ix_object_locations_node_id"

    def node_indexes(c: Any) -> dict[str, list[str | None]]:
        return {ix["name"]: ix["column_names"] for ix in inspect(c).get_indexes("object_locations")
                if ix["name"]}

    engine = make_engine(DatabaseSettings(url=url))
    try:
        await migrate.migrate_only(engine, "0007")
        async with engine.begin() as conn:
            assert name not in await conn.run_sync(node_indexes)
            await conn.execute(text("INSERT INTO object_locations (key, node_id, size, created_at) "
                                    "VALUES ('o/ab/cd/x.png', 'storage1', 7, CURRENT_TIMESTAMP)"))
        await migrate.migrate_only(engine, "0008")
        assert await migrate.current_revision(engine) == "0008"
        async with engine.connect() as conn:
            assert (await conn.run_sync(node_indexes))[name] == ["node_id"]
            rows = (await conn.execute(text("SELECT key, size FROM object_locations WHERE node_id = 'storage1'")))
            assert rows.all() == [("o/ab/cd/x.png", 7)]
            if engine.dialect.name == "sqlite":
                plan = (await conn.execute(text("EXPLAIN QUERY PLAN SELECT key FROM object_locations "
                                                "WHERE node_id = 'storage1'"))).all()
                assert any(f"USING INDEX {name} (node_id=?)" in row[-1] for row in plan), plan
        await migrate.downgrade(engine, "0007")
        async with engine.connect() as conn:
            assert name not in await conn.run_sync(node_indexes)
        await migrate.downgrade(engine, "base")
        assert await migrate.prepare(engine) == "created"
        async with engine.connect() as conn:
            assert (await conn.run_sync(node_indexes))[name] == ["node_id"]
    finally:
        await engine.dispose()


def test_object_locations_node_index_on_sqlite(tmp_path: Path) -> None:
    asyncio.run(_node_index_after_upgrade(f"sqlite+aiosqlite:///{tmp_path / 'ix.db'}"))


def test_object_locations_node_index_on_postgres(postgres: Postgres) -> None:
    asyncio.run(_node_index_after_upgrade(postgres.create_db("node_index")))


@pytest.fixture(scope="module")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[tuple[LocalCluster, str]]:
    url = postgres.create_db("cluster")
    root = tmp_path_factory.mktemp("pgcluster")
    mp = pytest.MonkeyPatch()
    mp.setenv("PIXELFOX_DATABASE__URL", url)
    try:
        local = start_cluster(root, Counts(upload=1, proc=1, storage=1, web=0))
    finally:
        mp.undo()
    try:
        yield local, url
    finally:
        local.stop()


def test_main_flow_on_postgres(pg_cluster: tuple[LocalCluster, str], postgres: Postgres, corpus: Path) -> None:
    local, _url = pg_cluster
    files = [corpus / "photos" / "painting_rgb.png", corpus / "photos" / "samsung_j3_orient6.jpg"]
    res = cli(local.root, "put", "--json", "--wait", *map(str, files), timeout=300)
    out = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert [r["status"] for r in out] == ["ready", "ready"], res.stdout + res.stderr
    assert out[1]["width"] == 1932 and out[1]["height"] == 2576  # upright
    assert postgres.psql("SELECT count(*) FROM images WHERE status = 'ready'", db="cluster").strip() == "2"
    assert postgres.psql("SELECT version_num FROM alembic_version", db="cluster").strip() == migrate.head_revision()
    assert int(postgres.psql("SELECT count(*) FROM variants", db="cluster")) >= 2 * 5
    assert all(r["health"] == "healthy" for r in status(local.root).values())


def test_folder_commands_act_on_the_database_the_cluster_uses(pg_cluster: tuple[LocalCluster, str],
                                                              postgres: Postgres, corpus: Path,
                                                              tmp_path: Path) -> None:
    """H2/H3: a cluster switched to PostgreSQL records it in cluster.json; backup, upgrade-db, tiers move and
    migrate-db in its folder act on it (not on a stale .pixelfox/pixelfox.db), and migrate-db refuses to copy
    over the database the running cluster uses, however the URL is spelled."""
    local, url = pg_cluster
    state_file = local.root / ".pixelfox" / "cluster.json"
    assert state_file.stat().st_mode & 0o777 == 0o600
    state = json.loads(state_file.read_text())
    assert state["database_url"] == url
    put = cli(local.root, "put", "--json", "--wait", str(corpus / "photos" / "painting_rgb.png"), timeout=300)
    assert put.returncode == 0, put.stderr
    stale = local.root / ".pixelfox" / "pixelfox.db"  # what the commands used to read: an empty SQLite file
    res = cli(local.root, "upgrade-db", "--db", f"sqlite+aiosqlite:///{stale}")
    assert res.returncode == 0, res.stderr
    pg_images = int(postgres.psql("SELECT count(*) FROM images", db="cluster"))
    where = f"(from the cluster in {local.root})"

    res = cli(local.root, "backup", str(local.root / "meta.jsonl"))
    assert res.returncode == 0, res.stderr
    assert f"pixelfox: backing up {url} {where}" in res.stderr
    assert json.loads(res.stdout)["tables"]["images"]["rows"] == pg_images >= 1
    res = cli(local.root, "upgrade-db")
    assert res.returncode == 0 and f"upgrading {url}" in res.stderr, res.stderr
    res = cli(local.root, "tiers", "move", "--dry-run")
    assert res.returncode == 0 and f"pixelfox: database {url}" in res.stderr, res.stdout + res.stderr

    same = cli(local.root, "migrate-db", "--target", url)  # the default source is now the live database
    assert same.returncode == 2 and "--source and --target are the same database" in same.stderr, same.stderr
    other_spelling = url.replace("127.0.0.1", "localhost")
    for target in (url, other_spelling):
        res = cli(local.root, "migrate-db", "--source", f"sqlite+aiosqlite:///{stale}", "--target", target)
        assert res.returncode == 2, res.stdout + res.stderr
        assert "is the database a running manager uses" in res.stderr and "Traceback" not in res.stderr
    backup = tmp_path / "live.jsonl"
    assert cli(local.root, "backup", str(backup)).returncode == 0
    res = cli(local.root, "restore", str(backup), "--force")  # over the live database, nodes running
    assert res.returncode == 2 and "is the database a running manager uses" in res.stderr, res.stderr
    # from another folder too: the managers' connections are named pixelfox-manager in pg_stat_activity
    res = cli(tmp_path, "restore", str(backup), "--force", "--db", other_spelling)
    assert res.returncode == 2 and f"{other_spelling} is the database a running manager uses" in res.stderr, res.stderr
    assert int(postgres.psql("SELECT count(*) FROM images", db="cluster")) == pg_images  # untouched


def test_migrate_db_bad_urls_and_batch_say_what_to_do(pg_cluster: tuple[LocalCluster, str],
                                                     postgres: Postgres, tmp_path: Path) -> None:
    local, url = pg_cluster
    src = ["--source", url]
    cases = [  # a URL of the wrong form is bad input (2); one the database refuses is the environment's (1)
        (url.replace("postgresql+asyncpg", "postgresql"), "use postgresql+asyncpg://USER[:PASSWORD]@HOST", 2),
        (postgres.url("no_such_db"), 'database "no_such_db" does not exist', 1),
        (f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x", "cannot use the database", 1),
        ("mysql+aiomysql://u@h/db", "only PostgreSQL", 2),
    ]
    for target, why, code in cases:
        res = cli(local.root, "migrate-db", *src, "--target", target)
        assert res.returncode == code, res.stdout + res.stderr
        assert why in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = cli(local.root, "migrate-db", "--source", f"sqlite+aiosqlite:///{tmp_path / 'none.db'}", "--target",
              postgres.create_db("unused"))
    assert res.returncode == 2 and "no SQLite database at" in res.stderr, res.stderr
    assert not (tmp_path / "none.db").exists()
    res = cli(local.root, "migrate-db", *src, "--target", postgres.url("unused"), "--batch", "0")
    assert res.returncode == 2 and "--batch: 0 is out of range: give a whole number of at least 1" in res.stderr


async def _checksums(url: str) -> dict[str, rows.TableSum]:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        return await rows.checksums(engine)
    finally:
        await engine.dispose()


def _pixelfox(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False)


def test_migrate_db_online_resumable_then_restore_drill(cluster: ClusterHandle, postgres: Postgres,
                                                        corpus: Path, tmp_path: Path) -> None:
    # some rows to move: an image with its variants, its upload, its object locations
    put = cluster.pixelfox("put", "--json", "--wait", str(corpus / "photos" / "blackbug_alpha.png"))
    assert json.loads(put.stdout.splitlines()[0])["status"] == "ready", put.stdout + put.stderr
    target = postgres.create_db("migrated")

    first = _pixelfox(cluster.root, "migrate-db", "--target", target, "--batch", "7")  # online: the cluster runs
    assert first.returncode == 0, first.stdout + first.stderr
    rep = json.loads(first.stdout)
    assert rep["verified"], rep
    assert rep["tables"]["images"]["target_rows"] >= 1 and rep["tables"]["variants"]["copied"] >= 5
    # a second run (after an interruption, or the final pass with managers stopped) copies nothing new
    again = json.loads(_pixelfox(cluster.root, "migrate-db", "--target", target).stdout)
    assert again["verified"] and all(t["copied"] == 0 for t in again["tables"].values()), again
    # resumable: half a table gone from the target is completed by the next run
    postgres.psql("DELETE FROM variants WHERE id IN (SELECT id FROM variants ORDER BY id LIMIT 3)", db="migrated")
    fixed = json.loads(_pixelfox(cluster.root, "migrate-db", "--target", target).stdout)
    assert fixed["verified"] and fixed["tables"]["variants"]["copied"] >= 3, fixed
    # PostgreSQL sequences moved past the copied ids: a new variant row gets a fresh id
    nid = postgres.psql("INSERT INTO variants (image_id, recipe_version, name, format, width, height, bytes, frames,"
                        " key, sha256) SELECT id, 99, 'x', 'x', 1, 1, 1, 1, 'k', '' FROM images LIMIT 1 RETURNING id",
                        db="migrated")
    assert int(nid.splitlines()[0]) > int(postgres.psql("SELECT max(id) FROM variants WHERE recipe_version <> 99",
                                                        db="migrated"))
    postgres.psql("DELETE FROM variants WHERE recipe_version = 99", db="migrated")

    # restore drill: back up PostgreSQL, restore into an empty SQLite file and an empty PostgreSQL db
    backup = tmp_path / "meta.jsonl.gz"
    res = _pixelfox(cluster.root, "backup", str(backup), "--db", target)
    assert res.returncode == 0, res.stderr
    header = json.loads(res.stdout)
    assert header["revision"] == migrate.head_revision() and header["tables"]["images"]["rows"] >= 1
    for dest in (f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}", postgres.create_db("restored")):
        res = _pixelfox(cluster.root, "restore", str(backup), "--db", dest)
        assert res.returncode == 0, res.stderr
        sums = asyncio.run(_checksums(dest))
        assert {n: (s.rows, s.sha256) for n, s in sums.items()} == {
            n: (t["rows"], t["sha256"]) for n, t in header["tables"].items()}
        refused = _pixelfox(cluster.root, "restore", str(backup), "--db", dest)
        assert refused.returncode != 0 and "not empty" in refused.stderr
        assert _pixelfox(cluster.root, "restore", str(backup), "--db", dest, "--force").returncode == 0


def _sqlite_with_a_user(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}"
    assert _pixelfox(tmp_path, "upgrade-db", "--db", url).returncode == 0
    engine = make_engine(DatabaseSettings(url=url))

    async def add() -> None:
        try:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO users (id, name, password_hash, role, created_at) "
                                        "VALUES ('u1', 'alice', 'argon2-hash', 'user', '2024-01-01 00:00:00')"))
        finally:
            await engine.dispose()

    asyncio.run(add())
    return url


def test_backup_never_replaces_what_is_not_a_regular_file_and_is_private(tmp_path: Path) -> None:
    url = _sqlite_with_a_user(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (tmp_path / "link.jsonl").symlink_to(victim)
    for name, why in (("fifo", "is not a regular file"), ("link.jsonl", "is a symbolic link"),
                      ("nofolder/x.gz", f"the folder {tmp_path / 'nofolder'} does not exist")):
        res = _pixelfox(tmp_path, "backup", str(tmp_path / name), "--db", url)
        assert res.returncode == 2, res.stdout + res.stderr
        assert why in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert (tmp_path / "link.jsonl").is_symlink() and victim.read_text() == "keep me\n"
    assert not (tmp_path / "nofolder").exists() and not list(tmp_path.glob("*.part"))

    old = tmp_path / "old.jsonl.gz"
    old.write_text("an older, world-readable backup")
    old.chmod(0o644)
    for out in (tmp_path / "new.jsonl", old):
        res = _pixelfox(tmp_path, "backup", str(out), "--db", url)
        assert res.returncode == 0, res.stderr
        assert os.stat(out).st_mode & 0o777 == 0o600  # it holds password and API-key hashes
        assert json.loads(res.stdout)["tables"]["users"]["rows"] == 1
    with gzip.open(old, "rt") as f:
        assert json.loads(f.readline())["format"] == BACKUP_FORMAT
    upper = tmp_path / "META.JSONL.GZ"  # the suffix in any case means gzip
    assert _pixelfox(tmp_path, "backup", str(upper), "--db", url).returncode == 0
    with gzip.open(upper, "rt") as f:
        assert json.loads(f.readline())["format"] == BACKUP_FORMAT

    streamed = _pixelfox(tmp_path, "backup", "-", "--db", url)
    assert streamed.returncode == 0, streamed.stderr
    lines = streamed.stdout.splitlines()
    assert json.loads(lines[0])["format"] == BACKUP_FORMAT and json.loads(lines[1])["r"]["name"] == "alice"
    assert (tmp_path / "new.jsonl").read_text().splitlines()[1:] == lines[1:]


def test_restore_of_a_foreign_or_truncated_file_says_so_and_changes_nothing(tmp_path: Path) -> None:
    url = _sqlite_with_a_user(tmp_path)
    good = tmp_path / "good.jsonl.gz"
    assert _pixelfox(tmp_path, "backup", str(good), "--db", url).returncode == 0
    plain = tmp_path / "good.jsonl"
    assert _pixelfox(tmp_path, "backup", str(plain), "--db", url).returncode == 0
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    cut_gz = tmp_path / "cut.jsonl.gz"
    cut_gz.write_bytes(good.read_bytes()[: len(good.read_bytes()) - 30])
    cut = tmp_path / "cut.jsonl"
    cut.write_text(plain.read_text()[:-20])
    target = f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"
    future = tmp_path / "future.jsonl"  # a later file format: refused, not read as if it were this one
    head, _, rest = plain.read_text().partition("\n")
    future.write_text(json.dumps({**json.loads(head), "version": 99}) + "\n" + rest)
    for bad, why in ((passwd, "is not a PixelFox metadata backup"), (tmp_path, "is not a file"),
                     (future, "is a backup in file format version 99; this PixelFox reads version 1"),
                     (cut_gz, "is truncated"), (cut, "is truncated or damaged at line 2")):
        res = _pixelfox(tmp_path, "restore", str(bad), "--db", target)
        assert res.returncode == 2, res.stdout + res.stderr
        assert why in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "target.db").exists()  # the failed restores left nothing behind
    renamed = tmp_path / "gzip-without-suffix"
    renamed.write_bytes(good.read_bytes())
    res = _pixelfox(tmp_path, "restore", str(renamed), "--db", target)
    assert res.returncode == 0 and json.loads(res.stdout)["rows"]["users"] == 1, res.stderr


def test_migrate_db_removes_rows_gone_from_the_source(tmp_path: Path, postgres: Postgres) -> None:
    """M1: rows deleted or replaced (same unique name, new key) in the source between passes are removed from
    the target, so the pass after the managers stop reports verified."""
    url = _sqlite_with_a_user(tmp_path)  # u1 alice
    db = sqlite3.connect(tmp_path / "meta.db")
    db.execute("PRAGMA foreign_keys=ON")
    db.executemany("INSERT INTO users (id, name, password_hash, role, created_at) VALUES (?, ?, 'h', 'user', "
                   "'2024-01-01 00:00:00')", [("u2", "bob"), ("u3", "carol")])
    db.execute("INSERT INTO api_keys (id, user_id, label, key_hash, prefix, created_at) VALUES "
               "('k1', 'u3', 'l', 'kh1', 'p', '2024-01-01 00:00:00')")
    db.commit()
    target = postgres.create_db("gone")
    first = _pixelfox(tmp_path, "migrate-db", "--source", url, "--target", target)
    assert first.returncode == 0 and json.loads(first.stdout)["verified"], first.stdout + first.stderr

    db.execute("DELETE FROM users WHERE id IN ('u2', 'u3')")  # carol's key goes with her (CASCADE)
    db.execute("INSERT INTO users (id, name, password_hash, role, created_at) VALUES "
               "('u4', 'bob', 'h2', 'user', '2024-02-01 00:00:00')")  # bob again, under a new id
    db.commit()
    db.close()
    again = _pixelfox(tmp_path, "migrate-db", "--source", url, "--target", target)
    assert again.returncode == 0, again.stdout + again.stderr
    rep = json.loads(again.stdout)
    assert rep["verified"], rep
    assert rep["tables"]["users"]["removed"] == 2 and rep["tables"]["api_keys"]["removed"] == 1
    assert rep["tables"]["users"]["target_rows"] == 2 and rep["tables"]["api_keys"]["target_rows"] == 0
    assert postgres.psql("SELECT id, name FROM users ORDER BY id", db="gone").split() == ["u1|alice", "u4|bob"]


def test_migrate_db_rerun_counts_only_rows_it_wrote(tmp_path: Path, postgres: Postgres) -> None:
    """A re-run writes and counts as ``copied`` only the rows new or changed since; the others are
    ``unchanged`` (every row of a table with one new user used to be counted as copied)."""
    url = _sqlite_with_a_user(tmp_path)  # u1 alice
    db = sqlite3.connect(tmp_path / "meta.db")
    db.executemany("INSERT INTO users (id, name, password_hash, role, created_at) VALUES (?, ?, 'h', 'user', "
                   "'2024-01-01 00:00:00')", [("u2", "bob"), ("u3", "carol")])
    db.commit()
    target = postgres.create_db("rerun")
    first = json.loads(_pixelfox(tmp_path, "migrate-db", "--source", url, "--target", target).stdout)
    assert first["tables"]["users"]["copied"] == 3 and first["tables"]["users"]["unchanged"] == 0, first

    db.execute("INSERT INTO users (id, name, password_hash, role, created_at) VALUES "
               "('u4', 'dave', 'h', 'user', '2024-02-01 00:00:00')")
    db.execute("UPDATE users SET role = 'admin' WHERE id = 'u2'")
    db.commit()
    db.close()
    again = _pixelfox(tmp_path, "migrate-db", "--source", url, "--target", target)
    assert again.returncode == 0, again.stdout + again.stderr
    users = json.loads(again.stdout)["tables"]["users"]
    assert users["match"] and (users["copied"], users["unchanged"], users["removed"]) == (2, 2, 0), users
    assert postgres.psql("SELECT id, role FROM users ORDER BY id", db="rerun").split() == [
        "u1|user", "u2|admin", "u3|user", "u4|user"]
    same = json.loads(_pixelfox(tmp_path, "migrate-db", "--source", url, "--target", target).stdout)
    assert (same["tables"]["users"]["copied"], same["tables"]["users"]["unchanged"]) == (0, 4), same


def _rows(url: str) -> dict[str, tuple[int, str]]:
    return {n: (s.rows, s.sha256) for n, s in asyncio.run(_checksums(url)).items()}


def test_a_restore_that_fails_verification_leaves_the_target_as_it_was(tmp_path: Path, postgres: Postgres) -> None:
    """A backup cut at a line boundary parses but does not verify: the whole restore (the --force wipe,
    the inserts, the verification) rolls back, on SQLite and PostgreSQL, into a full or a fresh target."""
    url = _sqlite_with_a_user(tmp_path)
    db = sqlite3.connect(tmp_path / "meta.db")
    db.executemany("INSERT INTO users (id, name, password_hash, role, created_at) VALUES (?, ?, 'h', 'user', "
                   "'2024-01-01 00:00:00')", [("u2", "bob"), ("u3", "carol")])
    db.commit()
    db.close()
    good = tmp_path / "good.jsonl"
    assert _pixelfox(tmp_path, "backup", str(good), "--db", url).returncode == 0
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(good.read_text().splitlines(keepends=True)[:-2]))  # whole lines: carol and bob gone
    for name, target in (("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"),
                         ("postgresql", postgres.create_db("restore_rollback"))):
        fresh = _pixelfox(tmp_path, "restore", str(cut), "--db", target)
        assert fresh.returncode == 2 and "restore verification failed" in fresh.stderr, (name, fresh.stderr)
        if name == "sqlite":  # the file the failed restore made is gone again
            assert not (tmp_path / "target.db").exists()
        else:  # the fresh database stays empty
            assert asyncio.run(_checksums(target))["users"].rows == 0, name
        res = _pixelfox(tmp_path, "restore", str(good), "--db", target)  # so the good file still goes in
        assert res.returncode == 0 and json.loads(res.stdout)["rows"]["users"] == 3, (name, res.stderr)
        before = _rows(target)
        forced = _pixelfox(tmp_path, "restore", str(cut), "--db", target, "--force")
        assert forced.returncode == 2 and "restore verification failed" in forced.stderr, (name, forced.stderr)
        assert _rows(target) == before and before["users"][0] == 3, name  # the --force wipe rolled back too


def test_restore_into_a_sqlite_folder_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    url = _sqlite_with_a_user(tmp_path)
    good = tmp_path / "good.jsonl"
    assert _pixelfox(tmp_path, "backup", str(good), "--db", url).returncode == 0
    target = f"sqlite+aiosqlite:///{tmp_path / 'typo' / 'x.db'}"
    res = _pixelfox(tmp_path, "restore", str(good), "--db", target)
    assert res.returncode == 2, res.stdout + res.stderr
    assert (f"{target}: folder {tmp_path / 'typo'} does not exist; create it first, or fix the path"
            in res.stderr), res.stderr
    assert not (tmp_path / "typo").exists()


def test_delete_then_upload_again_on_postgres(pg_cluster: tuple[LocalCluster, str], postgres: Postgres,
                                              tmp_path: Path) -> None:
    """The delete and the dedup lookup hold the image's row (``FOR UPDATE OF images``: PostgreSQL refuses a
    plain ``FOR UPDATE`` on a query that outer-joins the owner, which failed every hashed CreateUpload there).
    A delete, then the same bytes again: a new image, not the deleted one."""
    from PIL import Image as PILImage

    from pixelfox.grpcx.auth import api_key_metadata
    from pixelfox.grpcx.client import channel
    from pixelfox.v1 import manager_pb2, manager_pb2_grpc

    local, _url = pg_cluster
    photo = tmp_path / "again.png"
    PILImage.new("RGB", (123, 77), (200, 30, 90)).save(photo)
    first = cli(local.root, "put", "--json", "--wait", str(photo), timeout=300)
    assert first.returncode == 0, first.stderr
    slug = json.loads(first.stdout)["id"]
    key = json.loads((local.state / "cluster.json").read_text())["admin_api_key"]

    async def delete() -> None:
        async with channel(local.manager_address) as ch:
            await manager_pb2_grpc.ManagerServiceStub(ch).DeleteImage(
                manager_pb2.DeleteImageRequest(slug=slug), metadata=api_key_metadata(key), timeout=30)

    asyncio.run(delete())
    assert int(postgres.psql(f"SELECT count(*) FROM images WHERE slug = '{slug}'", db="cluster")) == 0
    again = cli(local.root, "put", "--json", "--wait", str(photo), timeout=300)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert (out["status"], out["deduplicated"]) == ("ready", False) and out["id"] != slug, out
