"""Users and API keys: argon2id password hashes (argon2-cffi), opaque API keys stored as SHA-256.

API keys look like ``pfx_<43 url-safe chars>`` (256 random bits), so a plain SHA-256 of the
key is a safe lookup hash. Unknown users are verified against a dummy hash so a login takes
the same time whether or not the name exists (RELIABILITY.md C5).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from ulid import ULID

from pixelfox import errors
from pixelfox.db.models import ApiKey, User
from pixelfox.passwords import MAX_PASSWORD, check_new_password
from pixelfox.schemes import API_KEY_PREFIX
from pixelfox.text import checked

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")
KEY_PREFIX = API_KEY_PREFIX

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory defaults
_DUMMY_HASH = _hasher.hash("pixelfox-timing-equaliser")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def enabled(user: User) -> User:
    """``user`` unchanged; AccountDisabled when an admin disabled the account."""
    if user.disabled_at is not None:
        raise errors.AccountDisabled()
    return user


class Accounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create_user(self, name: str, password: str, admin: bool = False) -> User:
        """Create a user; raises BadRequest (name/password rules) or AlreadyExists, also for a name
        that differs from an existing one only in case. Logging in still takes the exact name."""
        if not NAME_RE.match(name):
            raise errors.BadRequest("user name must be 3-32 characters: letters, digits, '_', '.', '-'")
        check_new_password(password)
        # names are unique ignoring case, so "Alice" cannot pass for "alice" on pages and in albums.
        # Check then insert: two racing registrations of one name in two cases can both pass.
        async with self.sessions() as s:
            taken = select(User.id).where(func.lower(User.name) == name.lower()).limit(1)
            if (await s.execute(taken)).first() is not None:
                raise errors.AlreadyExists(f"user name {name!r} is taken")
        pw_hash = await asyncio.to_thread(_hasher.hash, password)
        user = User(id=str(ULID()), name=name, password_hash=pw_hash, role="admin" if admin else "user")
        async with self.sessions() as s:
            s.add(user)
            try:
                await s.commit()
            except IntegrityError as exc:
                raise errors.AlreadyExists(f"user name {name!r} is taken") from exc
        return user

    async def verify_password(self, name: str, password: str) -> User:
        """The user for ``name`` if ``password`` matches; InvalidCredentials otherwise (same message);
        AccountDisabled for the right password of a disabled account (only then: the answer tells
        nobody without the password whether an account is disabled)."""
        async with self.sessions() as s:
            user = (await s.execute(select(User).where(User.name == name))).scalar_one_or_none()
        stored = user.password_hash if user is not None else _DUMMY_HASH
        try:
            await asyncio.to_thread(_hasher.verify, stored, password[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            raise errors.InvalidCredentials() from None
        if user is None:
            raise errors.InvalidCredentials()
        return enabled(user)

    async def get_user(self, user_id: str) -> User:
        async with self.sessions() as s:
            user = await s.get(User, user_id)
        if user is None:
            raise errors.NotFound("no such user")
        return user

    async def get_user_by_name(self, name: str) -> User:
        async with self.sessions() as s:
            user = (await s.execute(select(User).where(User.name == name))).scalar_one_or_none()
        if user is None:
            raise errors.NotFound(f"no user named {name!r}")
        return user

    async def create_api_key(self, user: User, label: str) -> tuple[str, str]:
        """A new API key for ``user``: ``(key, key id)``. The key itself is returned once and never stored;
        the id (a ULID) is what ``ListApiKeys`` shows and ``RevokeApiKey`` takes. Raises BadRequest for
        a label with control characters."""
        key, key_id = KEY_PREFIX + secrets.token_urlsafe(32), str(ULID())
        async with self.sessions() as s:
            s.add(ApiKey(id=key_id, user_id=user.id, label=checked(label, "label")[:100],
                         key_hash=hash_api_key(key), prefix=key[:10]))
            await s.commit()
        return key, key_id

    async def resolve_api_key(self, key: str) -> User:
        """The owner of a valid, unrevoked key; Unauthenticated otherwise, AccountDisabled when an
        admin disabled the owner."""
        if not key.startswith(KEY_PREFIX):
            raise errors.Unauthenticated("invalid API key")
        async with self.sessions() as s:
            row = (
                await s.execute(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key)))
            ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise errors.Unauthenticated("invalid API key")
        return enabled(row.user)
