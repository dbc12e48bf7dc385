"""Which SQLite file a URL names, however it is spelled: the guards that keep migrate-db and restore
off a running cluster's database compare these (a ``file:`` URI slipped past a path comparison and
migrate-db deleted live rows)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from pixelfox import errors
from pixelfox.config import DatabaseSettings
from pixelfox.db.checks import check_url
from pixelfox.db.engine import make_engine
from pixelfox.db.identity import identity, open_engine, refuse_live


async def _identity(url: str, *, tools: bool = True) -> tuple[str, ...]:
    """:func:`identity` through the database tools' checks (``tools``), or of a bare engine."""
    engine = open_engine(url) if tools else make_engine(DatabaseSettings(url=url))
    try:
        return await identity(engine)
    finally:
        await engine.dispose()


def test_every_spelling_of_one_sqlite_file_is_that_file(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    other = tmp_path / "other.db"
    asyncio.run(_identity(f"sqlite+aiosqlite:///{live}"))  # creates the file
    asyncio.run(_identity(f"sqlite+aiosqlite:///{other}"))
    (tmp_path / "link.db").symlink_to(live)
    os.link(live, tmp_path / "hard.db")
    (tmp_path / "sub").mkdir()
    spellings = [f"sqlite+aiosqlite:///{live}", f"sqlite+aiosqlite:///file:{live}?uri=true",
                 f"sqlite+aiosqlite:///{tmp_path / 'link.db'}", f"sqlite+aiosqlite:///{tmp_path / 'hard.db'}",
                 f"sqlite+aiosqlite:///{tmp_path / 'sub' / '..' / 'live.db'}"]
    ids = {asyncio.run(_identity(u)) for u in spellings}
    assert len(ids) == 1, ids
    assert asyncio.run(_identity(f"sqlite+aiosqlite:///{other}")) not in ids


def test_refuse_live_names_the_running_database(tmp_path: Path) -> None:
    live = f"sqlite+aiosqlite:///{tmp_path / 'live.db'}"
    asyncio.run(_identity(live))
    with pytest.raises(errors.BadRequest, match="is the database the running cluster uses: restoring would "):
        asyncio.run(refuse_live(f"sqlite+aiosqlite:///file:{tmp_path / 'live.db'}?uri=true", live, "restoring"))
    asyncio.run(refuse_live(f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}", live, "restoring"))  # another file


def test_a_uri_filename_makes_its_own_folder_not_one_named_file_in_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    target = tmp_path / "new folder" / "live.db"
    url = f"sqlite+aiosqlite:///file:{str(target).replace(' ', '%20')}?uri=true"
    with pytest.raises(errors.BadRequest, match="new folder does not exist; create it first, or fix the path"):
        open_engine(url)  # restore and migrate-db refuse a target folder that does not exist (a typo)
    asyncio.run(_identity(url, tools=False))  # the engine itself makes the URI's folder
    assert target.is_file() and list(cwd.iterdir()) == []  # it made ./file:/tmp/... before
    check_url(url, must_exist=True)  # the URI's file is found
    with pytest.raises(errors.BadRequest, match=f"no SQLite database at {tmp_path}/gone.db"):
        check_url(f"sqlite+aiosqlite:///file:{tmp_path}/gone.db?uri=true", must_exist=True)


def test_an_in_memory_uri_names_no_file() -> None:
    from sqlalchemy.engine import make_url

    from pixelfox.db.engine import sqlite_path

    # it made a schema-lock file named after the memory database in the working directory
    assert sqlite_path(make_url("sqlite+aiosqlite:///file:memdb1?mode=memory&cache=shared&uri=true")) == ":memory:"
    assert sqlite_path(make_url("sqlite+aiosqlite:///file:/tmp/x.db?mode=ro&uri=true")) == "/tmp/x.db"
