"""Sessions in Redis (an aiohttp-session storage) and the per-session CSRF token.

Sessions are shared by every web instance that shares Redis and survive restarts. The store
works with every mode of :mod:`pixelfox.redisx` (single, Sentinel and Redis Cluster: it uses
single-key commands and :mod:`pixelfox.session_index`, whose keys share the ``{session}`` tag).
Compared with the stock ``RedisStorage`` (RELIABILITY.md 3C, OWASP session cheat sheet):

* ids are 256-bit ``secrets.token_urlsafe(32)`` values, and cookie values that do not look
  like one are ignored before they reach a Redis key;
* keys follow ``pixelfox:{session}:<id>``;
* an emptied (invalidated) session is deleted from Redis, not rewritten as ``{}``;
* :func:`login` deletes the pre-login session and issues a new id (no fixation);
* a session with no user (it only holds the CSRF token of a login, register or report form)
  lives :data:`PRELOGIN_MAX_AGE_S` in Redis and in the cookie; a logged-in one lives
  ``max_age``. Pages an anonymous visitor only reads never create one;
* a cookie whose session was ended because an admin disabled its user finds the marker
  :mod:`pixelfox.session_index` left in its place: :func:`session_ended` says so for that request,
  so the error middleware and the login page can say why (not just "not logged in").
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp_session import AbstractStorage, Session, get_session, new_session
from redis.asyncio.cluster import RedisCluster

from pixelfox import errors
from pixelfox.session_index import ended_key, index_session, session_key
from pixelfox.v1 import manager_pb2
from web.session_metrics import measured

COOKIE_NAME = "pixelfox_session"
CSRF_KEY = "csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
PRELOGIN_MAX_AGE_S = 30 * 60  # a session without a user: just long enough to fill in a form
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: the request field :meth:`SessionStore.load_session` sets to the marker of a cookie's ended session
ENDED_FIELD = "pixelfox_session_ended"


class SessionStore(AbstractStorage):
    """Sessions in Redis like aiohttp-session's ``RedisStorage``, with strict ids, namespaced keys
    and real deletion.

    ``redis`` is a ``redis.asyncio.Redis`` (single or Sentinel mode) or a
    ``redis.asyncio.cluster.RedisCluster`` (Cluster mode, see :func:`pixelfox.redisx.connect`).
    The stock ``RedisStorage`` refuses a ``RedisCluster``, so this class derives from
    ``AbstractStorage`` and does its own loading, saving and deleting.
    """

    def __init__(self, redis: aioredis.Redis | RedisCluster, *, max_age: int, secure: bool) -> None:
        super().__init__(cookie_name=COOKIE_NAME, max_age=max_age, secure=secure, httponly=True, samesite="Lax")
        self._redis = redis
        self._full_age = max_age
        self._key_factory = lambda: secrets.token_urlsafe(32)

    def load_cookie(self, request: web.Request) -> str | None:
        value = request.cookies.get(self.cookie_name)
        return value if value and _ID_RE.match(value) else None

    @measured("load")
    async def load_session(self, request: web.Request) -> Session:
        identity = self.load_cookie(request)
        if identity is not None:
            raw = await self._redis.get(session_key(identity))
            if raw is not None:
                try:
                    data = self._decoder(raw.decode())
                except ValueError:
                    data = None
                if data:
                    return Session(identity, data=data, new=False, max_age=self._lifetime(data.get("session")))
            elif ended := await self._redis.get(ended_key(identity)):  # a gone session: ended on purpose?
                request[ENDED_FIELD] = ended.decode()
        return Session(None, data=None, new=True, max_age=self.max_age)

    def _lifetime(self, values: Mapping[str, Any] | None) -> int:
        """``max_age`` for a logged-in session, :data:`PRELOGIN_MAX_AGE_S` (at most) for any other."""
        logged_in = values is not None and bool(values.get("user_id"))
        return self._full_age if logged_in else min(self._full_age, PRELOGIN_MAX_AGE_S)

    @measured("save")
    async def save_session(
        self, request: web.Request, response: web.StreamResponse, session: Session
    ) -> None:
        if session.empty:
            if session.identity is not None:
                await self.delete(str(session.identity))
            self.save_cookie(response, "", max_age=session.max_age)
            return
        identity = str(session.identity) if session.identity is not None else self._key_factory()
        max_age = self._lifetime(session)
        self.save_cookie(response, identity, max_age=max_age)
        await self._redis.set(session_key(identity), self._encoder(self._get_session_data(session)), ex=max_age)
        if session.get("user_id"):  # per-user index: a password change ends the other sessions
            await index_session(self._redis, str(session["user_id"]), identity, max_age)

    @measured("delete")
    async def delete(self, identity: str, ended: str = "") -> None:
        """Delete the session ``identity``; with ``ended`` (a reason such as
        :data:`pixelfox.session_index.ACCOUNT_DISABLED`) leave that marker in its place for the
        session's lifetime (:func:`session_ended`)."""
        await self._redis.delete(session_key(identity))
        if ended:
            await self._redis.set(ended_key(identity), ended, ex=self._full_age)


@dataclass(frozen=True)
class CurrentUser:
    id: str
    name: str
    role: str


def current_user(session: Session) -> CurrentUser | None:
    uid = session.get("user_id")
    if not uid:
        return None
    return CurrentUser(
        id=str(uid), name=str(session.get("user_name", "")), role=str(session.get("role", "user"))
    )


async def user_of(request: web.Request) -> CurrentUser | None:
    return current_user(await get_session(request))


def csrf_token(session: Session) -> str:
    """The session's CSRF token, created on first use."""
    token = session.get(CSRF_KEY)
    if not token:
        token = secrets.token_urlsafe(32)
        session[CSRF_KEY] = token
    return str(token)


def csrf_ok(session: Session, supplied: str | None) -> bool:
    expected = session.get(CSRF_KEY)
    return bool(expected and supplied) and hmac.compare_digest(str(expected), str(supplied))


def require_csrf(session: Session, supplied: str | None) -> None:
    if not csrf_ok(session, supplied):
        raise errors.Forbidden("missing or invalid CSRF token; reload the page and try again")


async def login(request: web.Request, user: manager_pb2.User) -> Session:
    """Forget the pre-login session (its id dies in Redis) and start a new one for ``user``."""
    old = await get_session(request)
    store: Any = request.get("aiohttp_session_storage")
    if old.identity is not None and isinstance(store, SessionStore):
        await store.delete(str(old.identity))
    session = await new_session(request)
    session["user_id"] = user.id
    session["user_name"] = user.name
    session["role"] = user.role or "user"
    session[CSRF_KEY] = secrets.token_urlsafe(32)
    return session


async def logout(request: web.Request, ended: str = "") -> None:
    """End the request's session; ``ended``: why, for the browser's next request (:meth:`SessionStore.delete`)."""
    session = await get_session(request)
    store: Any = request.get("aiohttp_session_storage")
    if session.identity is not None and isinstance(store, SessionStore):
        await store.delete(str(session.identity), ended)
    session.invalidate()


def session_ended(request: web.Request) -> str:
    """Why the session of the request's cookie ended (:data:`pixelfox.session_index.ACCOUNT_DISABLED`),
    "" when it did not or was not loaded yet (:func:`get_session` loads it)."""
    return str(request.get(ENDED_FIELD, ""))
