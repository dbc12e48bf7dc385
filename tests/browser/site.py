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


async def log_in(page: Any, base: str, name: str, password: str) -> None:
    """Log ``name`` in through ``/login`` and wait for ``/``."""
    await page.goto(f"{base}/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    assert name in await page.inner_text("header")


async def csrf(page: Any, base: str) -> str:
    """The signed-in session's CSRF token, read from the upload page's ``<meta name=csrf-token>``."""
    await page.goto(f"{base}/")
    token = await page.get_attribute("meta[name=csrf-token]", "content")
    assert token
    return str(token)
