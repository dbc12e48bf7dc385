"""The tus handlers of an upload node (:func:`nodes.upload.tus.make_app`) in process, against the
cluster's real Redis: how often a request's ticket is verified (a JWT decode and HMAC each time)."""

from __future__ import annotations

import asyncio
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from nodes.upload.tus import make_app
from pixelfox import tickets
from tests.uploadnode import KEY, new_upload, receiver


async def _verifies(redis_url: str, staging: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    redis = aioredis.from_url(redis_url)
    calls = []
    verify = tickets.verify

    def counted(*args: Any, **kwargs: Any) -> tickets.Ticket:
        calls.append(1)
        return verify(*args, **kwargs)

    monkeypatch.setattr(tickets, "verify", counted)
    try:
        rx = receiver(redis, staging)
        size = 1 << 20
        upload_id, token = await new_upload(rx, size, "image/png")
        ends = formatdate(tickets.usable_until(verify(KEY, token).expires_at), usegmt=True)
        auth = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        seen: dict[str, Any] = {"ends": ends}
        async with TestClient(TestServer(make_app(rx, "http://upload.test", lambda: True))) as client:
            calls.clear()
            r = await client.head(f"/tus/{upload_id}", headers=auth)
            seen["head"] = (r.status, len(calls), r.headers.get("Upload-Expires"))
            calls.clear()
            r = await client.patch(f"/tus/{upload_id}", data=b"x" * 1000, headers={
                **auth, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
            seen["patch"] = (r.status, len(calls), r.headers.get("Upload-Expires"))
        return seen
    finally:
        await redis.aclose()


def test_an_answer_verifies_its_ticket_once_per_check(cluster: Any, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``Upload-Expires`` verified the ticket again for every answer (a second JWT decode per HEAD,
    a third per PATCH, whose writer session verifies it once more): it takes the expiry of the ticket
    the request was already checked with, and says the same time."""
    seen = asyncio.run(_verifies(cluster.redis_url, tmp_path, monkeypatch))
    assert seen["head"] == (200, 1, seen["ends"])  # the ticket's end, earlier than the state's hour
    assert seen["patch"] == (204, 2, seen["ends"])  # the request's check and the writer session's
