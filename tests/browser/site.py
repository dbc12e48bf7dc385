"""Steps on the PixelFox site that several browser tests take."""

from __future__ import annotations

from typing import Any


async def register(page: Any, base: str, name: str, password: str) -> None:
    """Register ``name`` through ``/register`` and wait until the browser is signed in on ``/``."""
    await page.goto(f"{base}/register")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.fill("input[name=password2]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    assert name in await page.inner_text("header")
