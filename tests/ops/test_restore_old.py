"""``pixelfox restore`` of a backup made at an older schema revision, on SQLite and a real PostgreSQL.

The old database is made honestly: the migration scripts up to the old revision, rows written with
SQL for that schema, then the real ``pixelfox backup``. The restore builds that revision's schema,
loads and verifies the rows, and upgrades to head, all in one transaction: a restore that fails
leaves the target as it was. A backup from a newer PixelFox is refused, naming both revisions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from pixelfox import readmodel
from pixelfox.cli.launcher import Counts
from pixelfox.config import DatabaseSettings
from pixelfox.db import migrate
from pixelfox.db.engine import make_engine
from tests.ops.conftest import start_cluster, status
from tests.ops.pg import Postgres
from tests.ops.test_database import _tables
from tests.ops.test_start_checks import SECRET, _env

pytestmark = pytest.mark.e2e


def _pixelfox(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pixelfox", *args], cwd=root, capture_output=True, text=True,
                          timeout=300, check=False)


def _rows_sql(revision: str, ts: str) -> list[str]:
    """Rows for the schema at ``revision`` (0001: no EXIF, duplicate_of or upload error columns)."""
    upload_extra = (", duplicate_of, error_code, error_message", ", NULL, 'too-large', 'over 50 MB'") \
        if revision >= "0005" else ("", "")
    image_extra = (", exif, gps_lat, gps_lon", """, '{"Make": "Canon"}', 48.5, 2.25""") \
        if revision >= "0002" else ("", "")
    return [
        f"INSERT INTO users (id, name, password_hash, role, created_at) VALUES "
        f"('u1', 'alice', 'argon2-a', 'admin', {ts}), ('u2', 'bob', 'argon2-b', 'user', {ts})",
        f"INSERT INTO api_keys (id, user_id, label, key_hash, prefix, created_at, revoked_at) VALUES "
        f"('k1', 'u2', 'cli', 'kh1', 'pfx_', {ts}, NULL)",
        f"INSERT INTO uploads (id, user_id, filename, size, content_type, upload_node_id, status, created_at, "
        f"expires_at{upload_extra[0]}) VALUES ('up1', 'u2', 'cat.jpg', 1234, 'image/jpeg', 'upload-1', "
        f"'failed', {ts}, {ts}{upload_extra[1]})",
        f"INSERT INTO images (id, slug, upload_id, user_id, filename, title, sha256, bytes, format, mime, width, "
        f"height, frames, orientation, status, error_code, error_message, original_key, recipe_version, attempts, "
        f"created_at, ready_at, visibility, private_salt, description, keep_metadata{image_extra[0]}) VALUES "
        f"('i1', 'cat', 'up1', 'u2', 'cat.jpg', 'A cat', 'ab12', 1234, 'jpeg', 'image/jpeg', 640, 480, 1, 1, "
        f"'ready', '', '', 'orig/i1', 1, 1, {ts}, {ts}, 'public', '', 'on a mat', true{image_extra[1]})",
        "INSERT INTO variants (image_id, recipe_version, name, format, width, height, bytes, frames, key, sha256) "
        "VALUES ('i1', 1, 'thumb', 'webp', 160, 120, 321, 1, 'var/i1/thumb', 'cd34'), "
        "('i1', 1, 'medium', 'webp', 640, 480, 999, 1, 'var/i1/medium', 'ef56')",
        f"INSERT INTO albums (id, slug, user_id, title, description, cover_image_id, created_at) VALUES "
        f"('a1', 'pets', 'u2', 'Pets', '', 'i1', {ts})",
        f"INSERT INTO album_images (album_id, image_id, added_at) VALUES ('a1', 'i1', {ts})",
    ]


async def _execute(url: str, statements: list[str]) -> None:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as conn:
            for sql in statements:
                await conn.execute(text(sql))
    finally:
        await engine.dispose()


async def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(text(sql))]
    finally:
        await engine.dispose()


async def _old_database(url: str, revision: str) -> None:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        await migrate.migrate_only(engine, revision)  # the schema as the PixelFox of that revision made it
    finally:
        await engine.dispose()
    ts = "'2024-01-01 00:00:00'" if url.startswith("sqlite") else "'2024-01-01 00:00:00+00'"
    await _execute(url, _rows_sql(revision, ts))


async def _schema_state(url: str) -> tuple[str | None, list[Any], str]:
    """(revision, drift against the models, what a manager's schema step does now)."""
    engine = make_engine(DatabaseSettings(url=url))
    try:
        return await migrate.current_revision(engine), await migrate.drift(engine), await migrate.prepare(engine)
    finally:
        await engine.dispose()


def _assert_restored(url: str, revision: str) -> None:
    assert asyncio.run(_schema_state(url)) == (migrate.head_revision(), [], "current")
    q = lambda sql: asyncio.run(_query(url, sql))  # noqa: E731
    assert q("SELECT id, name, role, password_hash FROM users ORDER BY id") == [
        ("u1", "alice", "admin", "argon2-a"), ("u2", "bob", "user", "argon2-b")]
    assert q("SELECT id, user_id, key_hash FROM api_keys") == [("k1", "u2", "kh1")]
    (image,) = q("SELECT slug, title, width, keep_metadata, exif, gps_lat FROM images")
    assert image[:3] == ("cat", "A cat", 640) and bool(image[3]) is True
    if revision >= "0002":
        exif = image[4] if isinstance(image[4], dict) else json.loads(image[4])  # PostgreSQL: decoded already
        assert exif == {"Make": "Canon"} and image[5] == 48.5
    else:  # the columns 0002 added, empty as the upgrade leaves them
        assert image[4:] == (None, None)
    assert q("SELECT status, error_code FROM uploads") == [
        ("failed", "too-large" if revision >= "0005" else None)]
    assert q("SELECT id, name FROM variants ORDER BY id") == [(1, "thumb"), (2, "medium")]
    assert q("SELECT album_id, image_id FROM album_images") == [("a1", "i1")]
    (gen,) = q("SELECT generation FROM database_generation")
    assert len(gen[0]) == 32
    # the id sequence was moved past the restored rows: a new variant gets the next id
    asyncio.run(_execute(url, ["INSERT INTO variants (image_id, recipe_version, name, format, width, height, bytes, "
                               "frames, key, sha256) VALUES ('i1', 2, 'thumb', 'webp', 1, 1, 1, 1, 'k', '')"]))
    assert q("SELECT max(id) FROM variants") == [(3,)]


def _restore_drill(tmp_path: Path, revision: str, make_url: Any) -> None:
    """Back up a database at ``revision`` and restore it: into a fresh database (after a cut copy of the
    backup failed and left it without tables) and with --force over one at head (after a cut copy
    failed and left its rows, revision and generation as they were). ``make_url(name)``: an empty database."""
    source, fresh, full = make_url("old"), make_url("fresh"), make_url("full")
    asyncio.run(_old_database(source, revision))
    backup = tmp_path / f"at-{revision}.jsonl.gz"
    made = _pixelfox(tmp_path, "backup", str(backup), "--db", source)  # the real backup, at the old revision
    assert made.returncode == 0, made.stderr
    header = json.loads(made.stdout)
    assert header["revision"] == revision and header["tables"]["users"]["rows"] == 2
    assert "database_generation" not in header["tables"]

    # a backup cut short does not verify: the fresh target is left without a single table
    cut = tmp_path / "cut.jsonl"
    plain = _pixelfox(tmp_path, "backup", "-", "--db", source).stdout.splitlines(keepends=True)
    cut.write_text("".join(plain[:-1]))
    res = _pixelfox(tmp_path, "restore", str(cut), "--db", fresh)
    assert res.returncode == 2 and "restore verification failed" in res.stderr, res.stderr
    assert asyncio.run(_tables(fresh)) == set()

    res = _pixelfox(tmp_path, "restore", str(backup), "--db", fresh)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert (out["revision"], out["backup_revision"]) == (migrate.head_revision(), revision)
    assert out["rows"]["users"] == 2 and out["rows"]["variants"] == 2
    _assert_restored(fresh, revision)

    # over a database at head with rows: refused without --force; a bad file with --force keeps its rows
    assert _pixelfox(tmp_path, "upgrade-db", "--db", full).returncode == 0
    asyncio.run(_execute(full, ["INSERT INTO users (id, name, password_hash, role, created_at) VALUES "
                                "('u9', 'zoe', 'h', 'user', '2025-01-01 00:00:00+00')"]))
    generation = asyncio.run(_query(full, "SELECT * FROM database_generation"))
    refused = _pixelfox(tmp_path, "restore", str(backup), "--db", full)
    assert refused.returncode == 2 and "not empty (use --force" in refused.stderr, refused.stderr
    forced = _pixelfox(tmp_path, "restore", str(cut), "--db", full, "--force")
    assert forced.returncode == 2 and "restore verification failed" in forced.stderr, forced.stderr
    assert asyncio.run(_query(full, "SELECT id FROM users")) == [("u9",)]
    assert asyncio.run(_query(full, "SELECT * FROM database_generation")) == generation
    assert asyncio.run(_schema_state(full))[:2] == (migrate.head_revision(), [])
    forced = _pixelfox(tmp_path, "restore", str(backup), "--db", full, "--force")
    assert forced.returncode == 0, forced.stderr
    _assert_restored(full, revision)
    assert asyncio.run(_query(full, "SELECT * FROM database_generation")) != generation


@pytest.mark.parametrize("revision", ["0001", "0005"])
def test_a_backup_from_an_older_revision_restores_into_sqlite_and_is_upgraded(tmp_path: Path, revision: str) -> None:
    _restore_drill(tmp_path, revision, lambda name: f"sqlite+aiosqlite:///{tmp_path / name}.db")


@pytest.mark.parametrize("revision", ["0001", "0005"])
def test_a_backup_from_an_older_revision_restores_into_postgres_and_is_upgraded(
        tmp_path: Path, postgres: Postgres, revision: str) -> None:
    _restore_drill(tmp_path, revision, lambda name: postgres.create_db(f"old{revision}_{name}"))


def test_a_backup_from_a_newer_pixelfox_is_refused_naming_both_revisions(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}"
    assert _pixelfox(tmp_path, "upgrade-db", "--db", url).returncode == 0
    good = tmp_path / "good.jsonl"
    assert _pixelfox(tmp_path, "backup", str(good), "--db", url).returncode == 0
    head, _, rest = good.read_text().partition("\n")
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({**json.loads(head), "revision": "0099"}) + "\n" + rest)
    target = f"sqlite+aiosqlite:///{tmp_path / 'target.db'}"
    res = _pixelfox(tmp_path, "restore", str(newer), "--db", target)
    assert res.returncode == 2, res.stdout + res.stderr
    assert (f"is a backup at schema revision 0099, which this PixelFox (schema revision {migrate.head_revision()}) "
            "does not know: a newer PixelFox wrote it; upgrade PixelFox to restore it") in res.stderr, res.stderr
    assert not (tmp_path / "target.db").exists()

    # the database of a newer PixelFox is not backed up with columns missing either
    asyncio.run(_execute(url, ["UPDATE alembic_version SET version_num = '0099'"]))
    res = _pixelfox(tmp_path, "backup", str(tmp_path / "new.jsonl"), "--db", url)
    assert res.returncode == 2 and "the database is at schema revision 0099" in res.stderr, res.stderr
    assert not (tmp_path / "new.jsonl").exists()


def test_a_database_written_by_a_newer_pixelfox_is_refused_in_one_line_by_a_manager_and_the_cli(
        tmp_path: Path) -> None:
    """Alembic's "Can't locate revision" traceback used to end a manager, ``restore --force``,
    ``upgrade-db`` and ``migrate-db`` on such a database."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'meta.db'}"
    good = tmp_path / "good.jsonl"
    assert _pixelfox(tmp_path, "upgrade-db", "--db", url).returncode == 0
    assert _pixelfox(tmp_path, "backup", str(good), "--db", url).returncode == 0
    asyncio.run(_execute(url, ["UPDATE alembic_version SET version_num = '9999_future'"]))
    why = (f"the database is at schema revision 9999_future, which this PixelFox (newest {migrate.head_revision()}) "
           "does not know: it was written by a newer PixelFox; upgrade this one, or restore a backup into a new "
           "database")
    manager = subprocess.run([sys.executable, "-m", "nodes.manager"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, check=False, env=_env(
        PIXELFOX_CLUSTER__SECRET=SECRET, PIXELFOX_METRICS_PORT="-1", PIXELFOX_DATABASE__URL=url))
    assert manager.returncode == 1, manager.stderr
    assert manager.stderr.strip().splitlines()[-1] == why and "Traceback" not in manager.stderr, manager.stderr
    target = f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}"
    for args in (["restore", str(good), "--force", "--db", url], ["upgrade-db", "--db", url],
                 ["migrate-db", "--source", url, "--target", target]):
        res = _pixelfox(tmp_path, *args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.strip().splitlines()[-1] == f"pixelfox: {why} (bad-request)", (args, res.stderr)
        assert "Traceback" not in res.stderr, res.stderr
    assert asyncio.run(_query(url, "SELECT version_num FROM alembic_version")) == [("9999_future",)]


def test_a_manager_starts_on_a_database_restored_from_an_older_backup(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The restored database is one a manager serves: it finds the schema current and makes the read model
    follow the generation the restore gave it."""
    source, target = (f"sqlite+aiosqlite:///{tmp_path / n}.db" for n in ("old", "restored"))
    asyncio.run(_old_database(source, "0005"))
    backup = tmp_path / "old.jsonl"
    assert _pixelfox(tmp_path, "backup", str(backup), "--db", source).returncode == 0
    assert _pixelfox(tmp_path, "restore", str(backup), "--db", target).returncode == 0
    (generation,) = asyncio.run(_query(target, "SELECT generation FROM database_generation"))
    (tmp_path / "site").mkdir()
    monkeypatch.setenv("PIXELFOX_DATABASE__URL", target)
    local = start_cluster(tmp_path / "site", Counts(upload=0, proc=0, storage=1, web=0))
    try:
        nodes = status(tmp_path / "site")
        assert {r["health"] for r in nodes.values()} == {"healthy"} and len(nodes) == 2, nodes
        assert redis.Redis.from_url(local.redis_url).get(readmodel.GENERATION_KEY) == generation[0].encode()
    finally:
        local.stop()
    assert asyncio.run(_query(target, "SELECT version_num FROM alembic_version")) == [(migrate.head_revision(),)]
