"""``pixelfox.managerlink._Routed``: a unary call that found no manager goes once more over the shared
channel; one a manager answered with its own UNAVAILABLE is not run a second time (real gRPC servers
on loopback)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest

from pixelfox.errors import ERROR_CODE_KEY
from pixelfox.managerlink import _Routed
from pixelfox.v1 import manager_pb2, manager_pb2_grpc


class Manager(manager_pb2_grpc.ManagerServiceServicer):
    """Answers WhoAmI with user ``name``, or (``refuse``) fails it UNAVAILABLE as PixelFox does; counts calls."""

    def __init__(self, name: str, refuse: bool = False) -> None:
        self.name, self.refuse, self.calls = name, refuse, 0

    async def WhoAmI(self, request: manager_pb2.WhoAmIRequest, context: grpc.aio.ServicerContext
                     ) -> manager_pb2.User:
        self.calls += 1
        if self.refuse:
            context.set_trailing_metadata(((ERROR_CODE_KEY, "unavailable"),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the manager cannot reach Redis")
        return manager_pb2.User(name=self.name)


async def serve(servicer: Manager) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    manager_pb2_grpc.add_ManagerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def fallback() -> AsyncIterator[tuple[Manager, manager_pb2_grpc.ManagerServiceStub]]:
    servicer = Manager("fallback")
    server, address = await serve(servicer)
    async with grpc.aio.insecure_channel(address) as ch:
        yield servicer, manager_pb2_grpc.ManagerServiceStub(ch)
    await server.stop(None)


async def test_a_manager_gone_since_its_heartbeat_is_passed_over(fallback: tuple[Manager, object]) -> None:
    other, stub = fallback
    with socket.socket() as s:  # a port nothing listens on: the manager died
        s.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{s.getsockname()[1]}"
    async with grpc.aio.insecure_channel(gone) as ch:
        user = await _Routed(manager_pb2_grpc.ManagerServiceStub(ch), stub).WhoAmI(
            manager_pb2.WhoAmIRequest(), timeout=5)
    assert (user.name, other.calls) == ("fallback", 1)


async def test_an_unavailable_the_manager_answered_is_not_run_again(fallback: tuple[Manager, object]) -> None:
    other, stub = fallback
    refusing = Manager("first", refuse=True)
    server, address = await serve(refusing)
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await _Routed(manager_pb2_grpc.ManagerServiceStub(ch), stub).WhoAmI(
                    manager_pb2.WhoAmIRequest(), timeout=5)
    finally:
        await server.stop(None)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (refusing.calls, other.calls) == (1, 0)  # it ran twice: once there, once on the fallback
