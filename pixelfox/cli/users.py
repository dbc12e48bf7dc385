"""An admin's user and key commands: ``pixelfox users list``, ``users disable NAME``, ``users enable
NAME``, ``keys list --user NAME`` and ``keys revoke ID``.

They call the manager with the local admin's credential (or ``--api-key`` of an admin), as
``users create`` does. A disabled user cannot log in, and their API keys and web sessions stop
working; their images stay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from pixelfox.cli import context
from pixelfox.cli.tables import table_console
from pixelfox.text import human_bytes
from pixelfox.v1 import manager_pb2

PAGE = 500  # users a ListUsers call returns at most


def already(what: str, state: str, since: str = "") -> str:
    """The line of an admin command that changed nothing (exit 0: it is safe to run twice): ``user bob was
    already disabled; nothing changed``, ``key ID was already revoked (2026-12-02 05:40 UTC); nothing
    changed``; ``since`` is an ISO 8601 time (the manager's), shown to the minute in UTC."""
    when = f" ({datetime.fromisoformat(since).astimezone(UTC):%Y-%m-%d %H:%M} UTC)" if since else ""
    return f"{what} was already {state}{when}; nothing changed"


def _set_disabled(opts: argparse.Namespace, disabled: bool) -> int:
    """``users disable|enable NAME``: ``disabled user bob`` (``... (an admin)`` for an admin: it said
    "enabled admin admin"), or :func:`already` when the user was in that state already; exit 0 either way."""
    ref = context.resolve(opts.manager, opts.api_key)
    req = manager_pb2.SetUserDisabledRequest(name=opts.name, disabled=disabled)
    user = asyncio.run(context.call_manager(ref, "SetUserDisabled", req))
    state = "disabled" if user.disabled else "enabled"
    if user.unchanged:
        print(already(f"user {user.name}", state))
    else:
        print(f"{state} user {user.name}{' (an admin)' if user.role == 'admin' else ''}")
    return 0


def cmd_users_disable(opts: argparse.Namespace) -> int:
    return _set_disabled(opts, True)


def cmd_users_enable(opts: argparse.Namespace) -> int:
    return _set_disabled(opts, False)


def user_row(u: manager_pb2.UserSummary) -> dict[str, Any]:
    """One user as a JSON-ready dict (the shape of ``pixelfox users list --json``): ``bytes`` of their
    images, ``created_at`` an ISO 8601 time in UTC."""
    return {"id": u.user.id, "name": u.user.name, "role": u.user.role, "disabled": u.user.disabled,
            "images": u.images, "bytes": u.bytes, "created_at": u.user.created_at}


def key_row(k: manager_pb2.ApiKeyInfo) -> dict[str, Any]:
    """One API key as a JSON-ready dict (the shape of ``pixelfox keys list --json``): ``prefix`` its
    first 10 characters, ``created_at`` and ``revoked_at`` ISO 8601 times in UTC (``revoked_at``
    null while it works)."""
    return {"id": k.id, "prefix": k.prefix, "label": k.label, "created_at": k.created_at,
            "revoked_at": k.revoked_at or None}


def cmd_users_list(opts: argparse.Namespace) -> int:
    """Every user, newest first: name, role, state, images, bytes, since (``--json``:
    ``{"users": [...]}``, each as :func:`user_row`)."""
    ref = context.resolve(opts.manager, opts.api_key)

    async def every() -> list[manager_pb2.UserSummary]:
        out: list[manager_pb2.UserSummary] = []
        while True:
            req = manager_pb2.ListUsersRequest(limit=PAGE, offset=len(out))
            reply = await context.call_manager(ref, "ListUsers", req)
            out.extend(reply.users)
            if not reply.users or len(out) >= reply.total:
                return out

    users = asyncio.run(every())
    if opts.json:
        print(json.dumps({"users": [user_row(u) for u in users]}, indent=2))
        return 0
    table = Table("name", "role", "state", "images", "bytes", "since")
    for u in users:
        table.add_row(u.user.name, u.user.role, "disabled" if u.user.disabled else "active", str(u.images),
                      human_bytes(u.bytes), u.user.created_at[:10], style="red" if u.user.disabled else None)
    table_console().print(table)
    return 0


def cmd_keys_list(opts: argparse.Namespace) -> int:
    """The API keys of user ``--user``, newest first: id, prefix, label, created, revoked
    (``--json``: ``{"keys": [...]}``, each as :func:`key_row`)."""
    ref = context.resolve(opts.manager, opts.api_key)
    reply = asyncio.run(context.call_manager(ref, "ListApiKeys", manager_pb2.ListApiKeysRequest(user_name=opts.user)))
    if opts.json:
        print(json.dumps({"keys": [key_row(k) for k in reply.keys]}, indent=2))
        return 0
    table = Table("id", "key", "label", "created", "revoked")
    for k in reply.keys:
        table.add_row(k.id, f"{k.prefix}…", k.label, k.created_at[:16], k.revoked_at[:16] or "-",
                      style="dim" if k.revoked_at else None)
    table_console().print(table)
    return 0


def cmd_keys_revoke(opts: argparse.Namespace) -> int:
    """``keys revoke ID``: ``revoked ID``, or :func:`already` with when, for a key revoked before (exit 0:
    it said "revoked" again)."""
    ref = context.resolve(opts.manager, opts.api_key)
    reply = asyncio.run(context.call_manager(ref, "RevokeApiKey", manager_pb2.RevokeApiKeyRequest(id=opts.id)))
    shown = opts.id.upper()  # as `keys list` shows it: ids are taken in any case
    print(already(f"key {shown}", "revoked", reply.revoked_at) if reply.already_revoked else f"revoked {shown}")
    return 0


def user_name(text: str) -> str:
    """argparse type of a user NAME argument: ``text`` as given. Raises ArgumentTypeError (a usage error,
    exit 2) for an empty or blank name: it names no user, and ``keys list --user ""`` was taken as "the
    caller's own keys", which the cluster credential has none of (an "unauthenticated" answer whose hint
    wrongly said the local key was revoked)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a user name cannot be empty")
    return text


def key_id(text: str) -> str:
    """argparse type of a key ID argument: ``text`` stripped. Raises ArgumentTypeError (a usage error, exit 2)
    for an empty or blank id, in the words :func:`user_name` uses (it went to the manager and came back
    "no API key ''")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("a key id cannot be empty")
    return text.strip()


def add_key_commands(keys: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """``list`` and ``revoke`` under the ``keys`` subparsers ``keys``."""
    kl = with_target(keys.add_parser("list", help="list the API keys of user NAME (revoked ones too)"))
    kl.add_argument("--user", required=True, type=user_name, metavar="NAME", help="the user, in any case")
    kl.add_argument("--json", action="store_true", help='one JSON document: {"keys": [...]}')
    kl.set_defaults(func=cmd_keys_list)
    kr = with_target(keys.add_parser("revoke", help="revoke the API key ID (from `keys list`) at once"))
    kr.add_argument("id", type=key_id)
    kr.set_defaults(func=cmd_keys_revoke)


def add_commands(users: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """``list``, ``disable`` and ``enable`` under the ``users`` subparsers ``users``."""
    ul = with_target(users.add_parser("list", help="list every user: role, state, images, bytes"))
    ul.add_argument("--json", action="store_true", help='one JSON document: {"users": [...]}')
    ul.set_defaults(func=cmd_users_list)
    ud = with_target(users.add_parser("disable", help="stop user NAME: no login, API key or session works; "
                                                      "their images stay"))
    ud.add_argument("name", type=user_name)
    ud.set_defaults(func=cmd_users_disable)
    ue = with_target(users.add_parser("enable", help="let a disabled user NAME back in"))
    ue.add_argument("name", type=user_name)
    ue.set_defaults(func=cmd_users_enable)
