"""A manager that does not answer (SIGSTOP: its sockets still accept, nothing comes back) seen from a real
web node: the 504 says what happened and what to do, on JSON and HTML answers, and names no address.

It said only "timed out". On a private cluster of a manager, a storage node and a web node (nothing else is needed for
these pages), so freezing the manager disturbs no other test.
"""

from __future__ import annotations

import asyncio
import html
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from pixelfox.cli.launcher import Counts, LocalCluster
from tests.conftest import wait_http
from web.cluster import RPC_TIMEOUT_S

pytestmark = pytest.mark.e2e

HINT = f"the cluster's manager did not answer in {RPC_TIMEOUT_S:g} s; try again shortly"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("silent")), Counts(upload=0, proc=0, storage=1, web=1))
    try:
        c.start()
        asyncio.run(c.wait_ready(90))
        wait_http(f"{c.web_urls[0]}/healthz")
        yield c
    finally:
        c.stop()


async def test_a_manager_that_does_not_answer_is_a_504_that_says_so(local: LocalCluster,
                                                                     http: aiohttp.ClientSession) -> None:
    web = local.web_urls[0]
    api, page = f"{web}/api/v1/images/nosuchimg1", f"{web}/i/nosuchimg1"
    async with http.get(api) as warm:  # the web node's channel to the manager is up: the manager answers
        assert warm.status == 404, await warm.text()
    manager = local.child("manager1").proc
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        async with http.get(api) as j, http.get(page, headers={"Accept": "text/html"}) as h:
            answers = (j.status, await j.json()), (h.status, h.content_type, await h.text())
    finally:
        os.kill(manager.pid, signal.SIGCONT)
    (json_status, body), (html_status, html_type, text) = answers
    assert json_status == 504 and body == {"error": {"code": "timeout", "message": HINT}}, body
    assert (html_status, html_type) == (504, "text/html") and HINT in html.unescape(text), text
    port = local.manager_address.rsplit(":", 1)[1]
    assert f":{port}" not in html.unescape(text)  # no peer address
