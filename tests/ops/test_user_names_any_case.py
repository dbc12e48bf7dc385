"""User names are unique ignoring case, and every lookup by name now ignores case too, on SQLite and
on PostgreSQL (:func:`nodes.manager.accounts.named`): logging in, ``CreateApiKey``/``ListApiKeys``
for ``--user NAME`` and ``SetUserDisabled`` took only the exact spelling ("no user named 'BOB'").
Two users whose names differ only in case (a registration race, or rows from before the rule) are
told apart by the exact spelling, and neither is guessed for another one."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import func, select
from ulid import ULID

from nodes.manager.account_ops import AccountOps
from nodes.manager.accounts import Accounts
from pixelfox import errors
from pixelfox.db.models import User
from tests.dbkit import open_db
from tests.ops.conftest import metadata_url

PASSWORD = "any case password 1"


async def _lookups(redis_url: str, db_url: str) -> None:
    async with open_db(db_url) as (_, sessions), contextlib.aclosing(aioredis.from_url(redis_url)) as redis:
        accounts = Accounts(sessions)
        ops = AccountOps(sessions, accounts, redis)
        root = await accounts.create_user("Root_" + str(ULID())[-8:], PASSWORD, admin=True)
        bob = await accounts.create_user("Bob_" + str(ULID())[-8:], PASSWORD)
        with pytest.raises(errors.AlreadyExists):
            await accounts.create_user(bob.name.lower(), PASSWORD)
        # the rule says which letters (a name with "ü" was told "letters" are allowed)
        with pytest.raises(errors.BadRequest, match=r"^user name must be 3-32 characters: ASCII letters \(a-z, A-Z"):
            await accounts.create_user("\u00fcn\u00efcode", PASSWORD)

        assert (await accounts.get_user_by_name(bob.name.upper())).id == bob.id
        assert (await accounts.verify_password(bob.name.lower(), PASSWORD)).name == bob.name
        with pytest.raises(errors.InvalidCredentials):
            await accounts.verify_password(bob.name.lower(), PASSWORD + "x")
        key, key_id = await accounts.create_api_key(bob, "cli")
        assert [k.id for k in await ops.list_keys(root, False, bob.name.swapcase())] == [key_id]
        assert [k.id for k in await ops.list_keys(bob, False, bob.name.upper())] == [key_id]  # their own

        assert (await ops.set_disabled(root, False, bob.name.upper(), True))[0].id == bob.id
        with pytest.raises(errors.AccountDisabled):
            await accounts.resolve_api_key(key)
        assert (await ops.set_disabled(None, True, bob.name.lower(), False))[0].disabled_at is None
        with pytest.raises(errors.Forbidden, match=r"^you cannot disable your own account$"):
            await ops.set_disabled(root, False, root.name.lower(), True)
        # the local command: the cluster credential, and beside it the key of the user it would lock out
        root_key, _ = await accounts.create_api_key(root, "local admin")
        holder = await accounts.key_owner(root_key)
        assert holder is not None and holder.id == root.id
        with pytest.raises(errors.Forbidden, match=r"^you cannot disable your own account \(Root_\w+ owns the API "
                                                   r"key this command uses\)$"):
            await ops.set_disabled(None, True, root.name.upper(), True, holder)
        assert (await ops.set_disabled(None, True, bob.name, True, holder))[0].disabled_at is not None

        # two names in two cases (rows from before the rule): the exact spelling picks, no other guesses
        twin = User(id=str(ULID()), name=bob.name.upper(), password_hash=bob.password_hash, role="user")
        async with sessions() as s:
            s.add(twin)
            await s.commit()
            assert await s.scalar(select(func.count()).select_from(User).where(
                func.lower(User.name) == bob.name.lower())) == 2
        assert (await accounts.get_user_by_name(twin.name)).id == twin.id
        assert (await accounts.get_user_by_name(bob.name)).id == bob.id
        with pytest.raises(errors.BadRequest, match="more than one user is named"):
            await accounts.get_user_by_name(bob.name.lower())
        with pytest.raises(errors.InvalidCredentials):  # as an unknown name: no guess, no hint
            await accounts.verify_password(bob.name.lower(), PASSWORD)
        assert (await accounts.verify_password(twin.name, PASSWORD)).id == twin.id


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_names_are_looked_up_in_any_case(backend: str, redis_url: str, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    url = metadata_url(backend, tmp_path, request, "names_any_case")
    asyncio.run(_lookups(redis_url, url))
