"""Process logging: aiohttp's reports of requests it cannot parse are one INFO line, not an ERROR
with a traceback (a client's fault must not page the operator)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pixelfox import logs
from pixelfox.config import LogSettings


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, server = logging.getLogger(), logging.getLogger("aiohttp.server")
    handlers, level, filters = root.handlers[:], root.level, server.filters[:]
    yield
    root.handlers[:], server.filters[:] = handlers, filters
    root.setLevel(level)


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return answer


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_unparseable_requests_are_info_lines(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(LogSettings(), "web9")
    app = web.Application()
    app.router.add_get("/", _ok)
    async with TestServer(app) as server:
        port = server.port
        assert port is not None
        long_line = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        nul_header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Probe: \x00\r\n\r\n"
        for request in (long_line, nul_header):
            assert (await _raw(port, request)).split(b"\r\n")[0].endswith(b" 400 Bad Request")
        assert (await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).endswith(b"ok")
        await asyncio.sleep(0.1)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "aiohttp.server" in line]
    assert len(lines) == 2, err
    assert all(" web9 INFO aiohttp.server: Error handling request" in line for line in lines), err
    assert "LineTooLong" in lines[0] and "BadHttpMessage" in lines[1], err
    assert "Traceback" not in err and "ERROR" not in err


def test_a_server_fault_keeps_its_traceback(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure(LogSettings(), "web9")
    try:
        raise RuntimeError("our bug")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    err = capsys.readouterr().err
    assert "ERROR aiohttp.server: Error handling request" in err and "Traceback" in err and "our bug" in err
