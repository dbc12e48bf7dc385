"""``pixelfox users disable NAME`` and ``pixelfox users enable NAME``: an admin stops a user, or lets
them back in.

They call the manager with the local admin's credential (or ``--api-key`` of an admin), as
``users create`` does. A disabled user cannot log in, and their API keys and web sessions stop
working; their images stay.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from typing import Any

from pixelfox.cli import context
from pixelfox.v1 import manager_pb2, manager_pb2_grpc


async def call_manager(ref: context.ClusterRef, method: str, request: Any) -> Any:
    """``ManagerService.<method>(request)`` as the local admin (or the admin ``--api-key``); gRPC
    errors come out as their ``PixelfoxError`` (see :func:`context.manager_channel`)."""
    async with context.manager_channel(ref) as ch:
        stub = manager_pb2_grpc.ManagerServiceStub(ch)
        return await getattr(stub, method)(request, metadata=ref.admin_metadata(), timeout=30)


def _set_disabled(opts: argparse.Namespace, disabled: bool) -> int:
    ref = context.resolve(opts.manager, opts.api_key)
    user = asyncio.run(call_manager(ref, "SetUserDisabled",
                                    manager_pb2.SetUserDisabledRequest(name=opts.name, disabled=disabled)))
    print(f"{'disabled' if user.disabled else 'enabled'} {user.role} {user.name}")
    return 0


def cmd_users_disable(opts: argparse.Namespace) -> int:
    return _set_disabled(opts, True)


def cmd_users_enable(opts: argparse.Namespace) -> int:
    return _set_disabled(opts, False)


def add_commands(users: Any, with_target: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """``disable`` and ``enable`` under the ``users`` subparsers ``users``."""
    ud = with_target(users.add_parser("disable", help="stop user NAME: no login, API key or session works; "
                                                      "their images stay"))
    ud.add_argument("name")
    ud.set_defaults(func=cmd_users_disable)
    ue = with_target(users.add_parser("enable", help="let a disabled user NAME back in"))
    ue.add_argument("name")
    ue.set_defaults(func=cmd_users_enable)
