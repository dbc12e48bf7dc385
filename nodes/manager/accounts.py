"""Users and API keys: argon2id password hashes (argon2-cffi), opaque API keys stored as SHA-256.

API keys look like ``pfx_<43 url-safe chars>`` (256 random bits), so a plain SHA-256 of the
key is a safe lookup hash. Unknown users are verified against a dummy hash so a login takes
the same time whether or not the name exists (RELIABILITY.md C5).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from ulid import ULID

from pixelfox import errors
from pixelfox.db.models import ApiKey, User
from pixelfox.passwords import MAX_PASSWORD, check_new_password
from pixelfox.schemes import API_KEY_PREFIX
from pixelfox.text import checked
from pixelfox.usernames import USER_NAME_RULE, is_user_name

KEY_PREFIX = API_KEY_PREFIX
MAX_KEY_LABEL = 100  # characters, as the Settings form's maxlength

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory defaults
_DUMMY_HASH = _hasher.hash("pixelfox-timing-equaliser")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def enabled(user: User) -> User:
    """``user`` unchanged; AccountDisabled when an admin disabled the account."""
    if user.disabled_at is not None:
        raise errors.AccountDisabled()
    return user


def named(name: str) -> Select[User]:
    """The users called ``name`` ignoring case (names are unique that way, :meth:`Accounts.create_user`),
    as a query to refine (``.with_for_update()``) and give to :func:`one_named`. ``lower()`` folds
    ASCII alike on SQLite and PostgreSQL, and a name is ASCII (:mod:`pixelfox.usernames`)."""
    return select(User).where(func.lower(User.name) == name.lower())


def one_named(rows: Sequence[User], name: str) -> User | None:
    """The user :func:`named` found for ``name``: the only one, or the one spelt exactly so when two
    registrations of one name in two cases raced past the uniqueness check (or predate it); None
    for none. BadRequest when two match and neither is spelt ``name``: the exact name picks one."""
    if len(rows) < 2:
        return rows[0] if rows else None
    exact = [u for u in rows if u.name == name]
    if not exact:
        raise errors.BadRequest(f"more than one user is named {name!r} ignoring case; give the exact name")
    return exact[0]


class Accounts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create_user(self, name: str, password: str, admin: bool = False) -> User:
        """Create a user; raises BadRequest (name/password rules) or AlreadyExists, also for a name
        that differs from an existing one only in case. Logging in, and every lookup by name, ignores
        case too (:func:`named`)."""
        if not is_user_name(name):
            raise errors.BadRequest(USER_NAME_RULE)
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
        nobody without the password whether an account is disabled). ``name`` in any case
        (:func:`named`); a name two users share ignoring case logs in neither unless spelt exactly."""
        async with self.sessions() as s:
            try:
                user = one_named((await s.execute(named(name))).scalars().all(), name)
            except errors.BadRequest:
                user = None  # the same answer and timing as an unknown name
        # no password is longer than MAX_PASSWORD: a longer one is wrong (it was cut to that length and
        # compared, so anything typed after a 1024-character password logged in), at the same cost
        fits = len(password) <= MAX_PASSWORD
        stored = user.password_hash if user is not None and fits else _DUMMY_HASH
        try:
            await asyncio.to_thread(_hasher.verify, stored, password[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            raise errors.InvalidCredentials() from None
        if user is None or not fits:
            raise errors.InvalidCredentials()
        return enabled(user)

    async def get_user(self, user_id: str) -> User:
        async with self.sessions() as s:
            user = await s.get(User, user_id)
        if user is None:
            raise errors.NotFound("no such user")
        return user

    async def get_user_by_name(self, name: str) -> User:
        """The user called ``name``, in any case (:func:`named`, :func:`one_named`); NotFound for none."""
        async with self.sessions() as s:
            user = one_named((await s.execute(named(name))).scalars().all(), name)
        if user is None:
            raise errors.NotFound(f"no user named {name!r}")
        return user

    async def create_api_key(self, user: User, label: str) -> tuple[str, str]:
        """A new API key for ``user``: ``(key, key id)``. The key itself is returned once and never stored;
        the id (a ULID) is what ``ListApiKeys`` shows and ``RevokeApiKey`` takes. Raises BadRequest for
        a label with control characters or longer than :data:`MAX_KEY_LABEL` characters (it was cut there,
        without a word)."""
        label = checked(label, "label")
        if len(label) > MAX_KEY_LABEL:
            raise errors.BadRequest(f"label longer than {MAX_KEY_LABEL} characters")
        key, key_id = KEY_PREFIX + secrets.token_urlsafe(32), str(ULID())
        async with self.sessions() as s:
            s.add(ApiKey(id=key_id, user_id=user.id, label=label,
                         key_hash=hash_api_key(key), prefix=key[:10]))
            await s.commit()
        return key, key_id

    async def _key_row(self, key: str) -> ApiKey | None:
        """The stored row of API key ``key`` (revoked or not, its user loaded); None for an unknown key."""
        if not key.startswith(KEY_PREFIX):
            return None
        async with self.sessions() as s:
            return (await s.execute(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key)))).scalar_one_or_none()

    async def resolve_api_key(self, key: str) -> User:
        """The owner of a valid, unrevoked key; Unauthenticated otherwise, AccountDisabled when an
        admin disabled the owner."""
        row = await self._key_row(key)
        if row is None or row.revoked_at is not None:
            raise errors.Unauthenticated("invalid API key")
        return enabled(row.user)

    async def key_owner(self, key: str) -> User | None:
        """Whose API key ``key`` is, revoked or not and whether or not the owner is disabled; None for
        an unknown key. Not a credential: for the local ``pixelfox`` command, which sends its admin key
        beside the cluster credential, to say whose key it holds (an admin cannot disable themself)."""
        row = await self._key_row(key)
        return row.user if row is not None else None
