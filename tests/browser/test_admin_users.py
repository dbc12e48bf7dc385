"""An admin disables and enables a user with the buttons on ``/admin/users`` in a real browser
(Playwright + Debian's chromium), against the shared running cluster: the question is asked
first, a dismissed one changes nothing, the user's open page is logged out, the login page says
the account is disabled."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.site import admin_page, dismiss_first_dialog, submit_login, user_page

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]

PASSWORD = "browser password 1"


async def test_admin_disables_and_enables_a_user(cluster: Any, chromium: Any) -> None:
    base = cluster.web_url
    name, uctx, upage = await user_page(chromium, base, PASSWORD)

    admin, actx, apage = await admin_page(cluster, chromium, PASSWORD)
    await apage.goto(f"{base}/admin/users")
    row = apage.locator(f'tr[data-user="{name}"]')
    assert await row.locator("td.state").inner_text() == "active"
    assert await apage.locator(f'tr[data-user="{admin}"] button').count() == 0  # no button for oneself

    questions = dismiss_first_dialog(apage)
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
    await submit_login(upage, base, name, PASSWORD)
    assert "This account is disabled" in await upage.inner_text("main")

    await row.locator("button:has-text('Enable')").click()  # enabling asks nothing
    await apage.wait_for_url(f"{base}/admin/users")
    assert await row.locator("td.state").inner_text() == "active" and len(questions) == 2
    await submit_login(upage, base, name, PASSWORD)
    await upage.wait_for_url(f"{base}/")
    await uctx.close()
    await actx.close()
