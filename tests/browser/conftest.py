"""Playwright (Python) driving Debian's chromium; screenshots of every open page on failure.

No ``playwright install``: the browser is ``/usr/bin/chromium`` (Debian package ``chromium``).
Failed tests leave ``tests/output/<test>-<n>.png``; with ``PIXELFOX_SCREENSHOTS=1`` the test
also refreshes the small PNGs in ``docs/screenshots/``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parents[1] / "output"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
async def chromium(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A launched browser; every page of its contexts is screenshotted if the test fails."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            rep = getattr(request.node, "rep_call", None)
            if rep is not None and rep.failed:
                OUTPUT.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
                n = 0
                for ctx in browser.contexts:
                    for page in ctx.pages:
                        n += 1
                        with contextlib.suppress(Exception):  # best effort on a failing test
                            await page.screenshot(path=str(OUTPUT / f"{name}-{n}.png"), full_page=True)
            await browser.close()
