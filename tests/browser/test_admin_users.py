"""An admin disables and enables a user with the buttons on ``/admin/users`` in a real browser
(Playwright + Debian's chromium), against the shared running cluster: the question is asked
first, a dismissed one changes nothing, the user's open page is logged out, the login page says
the account is disabled."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.browser.site import register

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "browser password 1"


async def _log_in(page: Any, base: str, name: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("input[name=name]", name)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")


async def test_admin_disables_and_enables_a_user(cluster: Any, chromium: Any) -> None:
    base = cluster.web_url
    name = f"usr_{uuid.uuid4().hex[:10]}"
    uctx = await chromium.new_context()
    upage = await uctx.new_page()
    await register(upage, base, name, PASSWORD)

    admin = f"adm_{uuid.uuid4().hex[:10]}"
    r = cluster.pixelfox("users", "create", admin, "--admin", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    actx = await chromium.new_context(viewport={"width": 1000, "height": 720})
    apage = await actx.new_page()
    await _log_in(apage, base, admin)
    await apage.wait_for_url(f"{base}/")
    await apage.goto(f"{base}/admin/users")
    row = apage.locator(f'tr[data-user="{name}"]')
    assert await row.locator("td.state").inner_text() == "active"
    assert await apage.locator(f'tr[data-user="{admin}"] button').count() == 0  # no button for oneself

    questions: list[str] = []

    async def answer(dialog: Any) -> None:
        questions.append(dialog.message)
        await (dialog.accept() if len(questions) > 1 else dialog.dismiss())

    apage.on("dialog", answer)
    await row.locator("button:has-text('Disable')").click()
    await apage.wait_for_timeout(500)
    assert questions == [f"Disable {name}? They are logged out, their API keys stop working and they cannot "
                         "log in. Their images stay."]
    assert await row.locator("td.state").inner_text() == "active"
    await row.locator("button:has-text('Disable')").click()
    await apage.wait_for_url(f"{base}/admin/users")
    assert await row.locator("td.state").inner_text() == "disabled"

    await upage.goto(f"{base}/my")  # the user's session ended: back to the login page
    assert "/login" in upage.url
    await _log_in(upage, base, name)
    assert "This account is disabled" in await upage.inner_text("main")

    await row.locator("button:has-text('Enable')").click()  # enabling asks nothing
    await apage.wait_for_url(f"{base}/admin/users")
    assert await row.locator("td.state").inner_text() == "active" and len(questions) == 2
    await _log_in(upage, base, name)
    await upage.wait_for_url(f"{base}/")
    await uctx.close()
    await actx.close()
