"""Steps on the PixelFox site that several browser tests take."""

from __future__ import annotations

import uuid
from typing import Any


async def new_page(chromium: Any, **options: Any) -> tuple[Any, Any]:
    """A new browser context (1000x720 px viewport, 60 s default timeout; ``options`` go to
    ``new_context``) and a page in it; the caller closes the context."""
    ctx = await chromium.new_context(**{"viewport": {"width": 1000, "height": 720}, **options})
    ctx.set_default_timeout(60_000)
    return ctx, await ctx.new_page()


async def register(page: Any, base: str, name: str, password: str) -> None:
    """Register ``name`` through ``/register`` and wait until the browser is signed in on ``/``."""
    await page.goto(f"{base}/register")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.fill("input[name=password2]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    assert name in await page.inner_text("header")


async def user_page(chromium: Any, base: str, password: str, prefix: str = "usr",
                    **options: Any) -> tuple[str, Any, Any]:
    """A new user ``<prefix>_<10 hex digits>`` with ``password`` registered (:func:`register`) on a page
    of a new context (:func:`new_page` with ``options``): the user's name, the context and the page;
    the caller closes the context."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    ctx, page = await new_page(chromium, **options)
    await register(page, base, name, password)
    return name, ctx, page


async def submit_login(page: Any, base: str, name: str, password: str) -> None:
    """Fill in and send the ``/login`` form for ``name``; waits for nothing (a refused login stays
    on the login page)."""
    await page.goto(f"{base}/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


async def log_in(page: Any, base: str, name: str, password: str) -> None:
    """Log ``name`` in through ``/login`` and wait for ``/``."""
    await submit_login(page, base, name, password)
    await page.wait_for_url(f"{base}/")
    assert name in await page.inner_text("header")


def create_admin(cluster: Any, password: str, prefix: str = "adm") -> str:
    """A new admin user ``<prefix>_<10 hex digits>`` with ``password``, made with the real
    ``pixelfox users create --admin`` in the session ``cluster``; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    r = cluster.pixelfox("users", "create", name, "--admin", "--password-stdin", input=password + "\n")
    assert r.returncode == 0, r.stderr
    return name


async def admin_page(cluster: Any, chromium: Any, password: str, prefix: str = "adm",
                     **options: Any) -> tuple[str, Any, Any]:
    """A new admin (:func:`create_admin`) logged in (:func:`log_in`) on a page of a new context
    (:func:`new_page` with ``options``): the admin's name, the context and the page; the caller
    closes the context."""
    name = create_admin(cluster, password, prefix)
    ctx, page = await new_page(chromium, **options)
    await log_in(page, cluster.web_url, name, password)
    return name, ctx, page


def dismiss_first_dialog(page: Any) -> list[str]:
    """Answer every dialog ``page`` opens from now on: the first one dismissed, each later one
    accepted. Returns the list each dialog's message is appended to as it opens."""
    questions: list[str] = []

    async def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        await (dialog.accept() if len(questions) > 1 else dialog.dismiss())

    page.on("dialog", answer)
    return questions


async def csrf(page: Any, base: str) -> str:
    """The signed-in session's CSRF token, read from the upload page's ``<meta name=csrf-token>``."""
    await page.goto(f"{base}/")
    token = await page.get_attribute("meta[name=csrf-token]", "content")
    assert token
    return str(token)
