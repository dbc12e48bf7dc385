"""An admin's user and key commands: ``pixelfox users list``, ``users disable NAME``, ``users enable
NAME``, ``keys list --user NAME`` and ``keys revoke ID``.

They call the manager with the local admin's credential (or ``--api-key`` of an admin), as
``users create`` does. A disabled user cannot log in, and their API keys and web sessions stop
working; their images stay.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from rich.table import Table

from pixelfox.cli import context
from pixelfox.cli.tables import table_console
from pixelfox.text import human_bytes
from pixelfox.v1 import manager_pb2

PAGE = 500  # users a ListUsers call returns at most


def _set_disabled(opts: argparse.Namespace, disabled: bool) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    req = manager_pb2.SetUserDisabledRequest(name=opts.name, disabled=disabled)
    user = asyncio.run(context.call_manager(ref, "SetUserDisabled", req))
    print(f"{'disabled' if user.disabled else 'enabled'} {user.role} {user.name}")
    return 0


def cmd_users_disable(opts: argparse.Namespace) -> int:
    return _set_disabled(opts, True)


def cmd_users_enable(opts: argparse.Namespace) -> int:
    return _set_disabled(opts, False)


def cmd_users_list(opts: argparse.Namespace) -> int:
    """Every user, newest first: name, role, state, images, bytes, since."""
    ref = context.resolve(opts.manager, opts.api_key)

    async def every() -> list[manager_pb2.UserSummary]:
        out: list[manager_pb2.UserSummary] = []
        while True:
            req = manager_pb2.ListUsersRequest(limit=PAGE, offset=len(out))
            reply = await context.call_manager(ref, "ListUsers", req)
            out.extend(reply.users)
            if not reply.users or len(out) >= reply.total:
                return out

    table = Table("name", "role", "state", "images", "bytes", "since")
    for u in asyncio.run(every()):
        table.add_row(u.user.name, u.user.role, "disabled" if u.user.disabled else "active", str(u.images),
                      human_bytes(u.bytes), u.user.created_at[:10], style="red" if u.user.disabled else None)
    table_console().print(table)
    return 0


def cmd_keys_list(opts: argparse.Namespace) -> int:
    """The API keys of user ``--user``, newest first: id, prefix, label, created, revoked."""
    ref = context.resolve(opts.manager, opts.api_key)
    reply = asyncio.run(context.call_manager(ref, "ListApiKeys", manager_pb2.ListApiKeysRequest(user_name=opts.user)))
    table = Table("id", "key", "label", "created", "revoked")
    for k in reply.keys:
        table.add_row(k.id, f"{k.prefix}…", k.label, k.created_at[:16], k.revoked_at[:16] or "-",
                      style="dim" if k.revoked_at else None)
    table_console().print(table)
    return 0


def cmd_keys_revoke(opts: argparse.Namespace) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    asyncio.run(context.call_manager(ref, "RevokeApiKey", manager_pb2.RevokeApiKeyRequest(id=opts.id)))
    print(f"revoked {opts.id}")
    return 0


def add_key_commands(keys: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """``list`` and ``revoke`` under the ``keys`` subparsers ``keys``."""
    kl = with_target(keys.add_parser("list", help="list the API keys of user NAME (revoked ones too)"))
    kl.add_argument("--user", required=True, metavar="NAME")
    kl.set_defaults(func=cmd_keys_list)
    kr = with_target(keys.add_parser("revoke", help="revoke the API key ID (from `keys list`) at once"))
    kr.add_argument("id")
    kr.set_defaults(func=cmd_keys_revoke)


def add_commands(users: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """``list``, ``disable`` and ``enable`` under the ``users`` subparsers ``users``."""
    ul = with_target(users.add_parser("list", help="list every user: role, state, images, bytes"))
    ul.set_defaults(func=cmd_users_list)
    ud = with_target(users.add_parser("disable", help="stop user NAME: no login, API key or session works; "
                                                      "their images stay"))
    ud.add_argument("name")
    ud.set_defaults(func=cmd_users_disable)
    ue = with_target(users.add_parser("enable", help="let a disabled user NAME back in"))
    ue.add_argument("name")
    ue.set_defaults(func=cmd_users_enable)
