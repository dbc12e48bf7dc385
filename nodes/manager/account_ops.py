"""Account self-service and admin listings: API keys (list, revoke), change password, users.

Changing the password does not touch sessions: they belong to the web node, which deletes the
user's other sessions from its per-user index in Redis after this call succeeds.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from nodes.manager.accounts import MAX_PASSWORD, MIN_PASSWORD, Accounts, _hasher
from nodes.manager.images import iso
from nodes.manager.library import is_admin_user
from pixelfox import errors
from pixelfox.db.models import ApiKey, Image, User
from pixelfox.v1 import manager_pb2


def user_proto(u: User) -> manager_pb2.User:
    return manager_pb2.User(id=u.id, name=u.name, role=u.role, created_at=iso(u.created_at))


class AccountOps:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], accounts: Accounts) -> None:
        self.sessions = sessions
        self.accounts = accounts

    async def list_keys(self, user: User | None) -> list[manager_pb2.ApiKeyInfo]:
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

    async def revoke_key(self, user: User | None, key_id: str) -> bool:
        """Revoke one of the caller's keys (admins: anyone's); NotFound for another user's key."""
        if user is None:
            raise errors.Unauthenticated("revoking an API key needs a user")
        async with self.sessions() as s:
            row = await s.get(ApiKey, key_id)
            if row is None or (row.user_id != user.id and not is_admin_user(user)):
                raise errors.NotFound("no such API key")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                await s.commit()
        return True

    async def change_password(self, user: User | None, old: str, new: str) -> User:
        """Check ``old``, store the argon2id hash of ``new``; InvalidCredentials / BadRequest."""
        if user is None:
            raise errors.Unauthenticated("changing the password needs a user")
        if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
            raise errors.BadRequest(f"password must be at least {MIN_PASSWORD} characters")
        await self.accounts.verify_password(user.name, old)
        pw_hash = await asyncio.to_thread(_hasher.hash, new)
        async with self.sessions() as s:
            row = await s.get(User, user.id)
            if row is None:
                raise errors.NotFound("no such user")
            row.password_hash = pw_hash
            await s.commit()
        return user

    async def list_users(
        self, caller: User | None, limit: int, offset: int
    ) -> tuple[list[manager_pb2.UserSummary], int]:
        if not is_admin_user(caller):
            raise errors.Forbidden("only admins list users")
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
