"""Account self-service and admin listings: API keys (list, revoke), change password, users
(list, disable, enable).

Changing the password does not touch sessions: they belong to the web node, which deletes the
user's other sessions from its per-user index in Redis after this call succeeds. Disabling a user
deletes all of them here (:mod:`pixelfox.session_index`), since the command line can disable too,
and leaves a marker for each that lets the web say why its browser was logged out.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.accounts import Accounts, _hasher, named, one_named
from nodes.manager.images import iso
from nodes.manager.library import is_admin_user
from pixelfox import errors, ids
from pixelfox.db.engine import begin_write
from pixelfox.db.models import ApiKey, Image, User
from pixelfox.passwords import check_new_password
from pixelfox.session_index import end_sessions_of_disabled, forget_ended_sessions
from pixelfox.v1 import manager_pb2


def user_proto(u: User) -> manager_pb2.User:
    return manager_pb2.User(id=u.id, name=u.name, role=u.role, created_at=iso(u.created_at),
                            disabled=u.disabled_at is not None)


def check_admin(caller: User | None, cluster: bool, what: str) -> None:
    """Raise Forbidden ("only admins <what>") unless ``caller`` is an admin user, or the call came
    with the cluster credential and no acting user (the local ``pixelfox`` command)."""
    if not (is_admin_user(caller) or (cluster and caller is None)):
        raise errors.Forbidden(f"only admins {what}")


class AccountOps:
    """``redis`` is the cluster's Redis, where the web nodes keep their sessions (disabling a user
    ends them, :mod:`pixelfox.session_index`)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], accounts: Accounts, redis: aioredis.Redis) -> None:
        self.sessions = sessions
        self.accounts = accounts
        self.redis = redis

    async def list_keys(self, caller: User | None, cluster: bool = False, user_name: str = ""
                        ) -> list[manager_pb2.ApiKeyInfo]:
        """The keys of ``user_name`` (admins only, see :func:`check_admin`) or, with ``""``, the
        caller's own, newest first, revoked ones too. ``user_name`` in any case
        (:meth:`~nodes.manager.accounts.Accounts.get_user_by_name`). Unauthenticated without a user,
        NotFound for an unknown name."""
        if user_name and (caller is None or caller.name.lower() != user_name.lower()):
            check_admin(caller, cluster, "list another user's API keys")
            user: User | None = await self.accounts.get_user_by_name(user_name)
        else:
            user = caller
        if user is None:
            raise errors.Unauthenticated("listing API keys needs a user")
        async with self.sessions() as s:
            rows = (await s.execute(
                select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at.desc())
            )).scalars().all()
        return [
            manager_pb2.ApiKeyInfo(id=k.id, label=k.label, prefix=k.prefix, created_at=iso(k.created_at),
                                   revoked_at=iso(k.revoked_at))
            for k in rows
        ]

    async def revoke_key(self, user: User | None, key_id: str, cluster: bool = False) -> tuple[datetime, bool]:
        """Revoke one of the caller's keys (admins, and the local admin's cluster credential with no
        user: anyone's); NotFound for another user's key. Returns when the key was revoked and whether it
        already was before this call (then that earlier time, and nothing changes). Key ids are ULIDs, taken
        in any case; one that cannot be a key id is NotFound saying what one looks like (its first 40
        characters shown: it echoed an id of any length)."""
        local_admin = cluster and user is None
        if user is None and not local_admin:
            raise errors.Unauthenticated("revoking an API key needs a user")
        if not ids.ULID.fullmatch(key_id.upper()):
            shown = key_id if len(key_id) <= 40 else key_id[:40] + "..."
            raise errors.NotFound(f"no API key {shown!r}: a key id is 26 letters and digits, as `pixelfox keys "
                                  "list --user NAME` shows it")
        async with self.sessions() as s:
            row = await s.get(ApiKey, key_id.upper())
            if row is None or not (local_admin or is_admin_user(user) or (user and row.user_id == user.id)):
                raise errors.NotFound(f"no API key {key_id!r}")
            if row.revoked_at is not None:
                return row.revoked_at, True
            row.revoked_at = revoked_at = datetime.now(UTC)
            await s.commit()
        return revoked_at, False

    async def change_password(self, user: User | None, old: str, new: str) -> User:
        """Check ``old``, store the argon2id hash of ``new``. InvalidCredentials for a wrong ``old``;
        BadRequest for a ``new`` that breaks :func:`pixelfox.passwords.password_problem`'s rules or,
        once ``old`` is right, equals it (nothing changes, no other session should end)."""
        if user is None:
            raise errors.Unauthenticated("changing the password needs a user")
        check_new_password(new)
        await self.accounts.verify_password(user.name, old)
        if new == old:
            raise errors.BadRequest("the new password is the same as the current one")
        pw_hash = await asyncio.to_thread(_hasher.hash, new)
        async with self.sessions() as s:
            row = await s.get(User, user.id)
            if row is None:
                raise errors.NotFound("no such user")
            row.password_hash = pw_hash
            await s.commit()
        return user

    async def list_users(
        self, caller: User | None, limit: int, offset: int, cluster: bool = False
    ) -> tuple[list[manager_pb2.UserSummary], int]:
        check_admin(caller, cluster, "list users")
        async with self.sessions() as s:
            total = int(await s.scalar(select(func.count()).select_from(User)) or 0)
            q = (
                select(User, func.count(Image.id), func.coalesce(func.sum(Image.bytes), 0))
                .outerjoin(Image, Image.user_id == User.id)
                .group_by(User.id)
                .order_by(User.created_at.desc())
                .limit(max(1, min(limit or 100, 500)))
                .offset(max(0, offset))
            )
            rows = (await s.execute(q)).all()
        return [manager_pb2.UserSummary(user=user_proto(u), images=n, bytes=b) for u, n, b in rows], total

    async def set_disabled(self, caller: User | None, cluster: bool, name: str, disabled: bool,
                           holder: User | None = None) -> tuple[User, bool]:
        """Disable (or enable again) the user called ``name`` (in any case: :func:`named`); their
        images stay as they are. Disabling ends their web sessions at once (a browser still holding
        one is told the account is disabled: :func:`pixelfox.session_index.end_sessions_of_disabled`);
        their API keys stop working (see :func:`nodes.manager.accounts.enabled`).

        Allowed to an admin user, or to the cluster credential with no acting user (the local
        ``pixelfox`` command). Raises Forbidden for anyone else and for an admin disabling
        themself: ``caller``, or ``holder``, the owner of the API key a cluster-credential call
        carries beside it (the local admin's key: :meth:`nodes.manager.service.ManagerService.key_holder`),
        whose commands would all stop working. NotFound for an unknown name, Conflict for the last
        enabled admin. Returns the user and whether they already were in the state asked for (nothing
        changed; a disable still ends their sessions)."""
        check_admin(caller, cluster, "disable or enable users")
        async with self.sessions() as s:
            # Two admins disabling each other at once both saw the other enabled and left none: the
            # check and the write go under the write lock (SQLite) or with every enabled admin's row
            # locked first, always in id order (PostgreSQL; no deadlock between two such calls).
            await begin_write(s)
            admins = list((await s.execute(select(User.id).where(
                User.role == "admin", User.disabled_at.is_(None)).order_by(User.id).with_for_update())).scalars())
            row = one_named((await s.execute(named(name).with_for_update())).scalars().all(), name)
            if row is None:
                raise errors.NotFound(f"no user named {name!r}")
            if disabled and caller is not None and row.id == caller.id:
                raise errors.Forbidden("you cannot disable your own account")
            if disabled and caller is None and holder is not None and row.id == holder.id:
                raise errors.Forbidden(f"you cannot disable your own account ({row.name} owns the API key this "
                                       "command uses)")
            if disabled and row.disabled_at is None and row.role == "admin" and admins == [row.id]:
                raise errors.Conflict(f"{row.name} is the last enabled admin; make another admin first")
            unchanged = disabled == (row.disabled_at is not None)
            if not unchanged:
                row.disabled_at = datetime.now(UTC) if disabled else None
                await s.commit()
        if disabled:  # also when it already was: a session saved by a request in flight then ends too
            await end_sessions_of_disabled(self.redis, row.id)
        else:
            await forget_ended_sessions(self.redis, row.id)
        return row, unchanged
