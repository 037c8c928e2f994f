"""The API keys page in a real browser: a new key goes to the clipboard and works against the
live server, and revoking one asks first."""

from __future__ import annotations

import pytest
import requests

from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom

pytestmark = pytest.mark.browser


def _sign_in_and_create_a_key(page, url: str, name: str) -> str:
    sign_in(page, url, "erin")
    page.goto(f"{url}/api-keys/")
    page.fill("#id_name", name)
    page.select_option("#id_scope", "trade")
    page.click("text=Create key")
    return page.locator("#new-key").inner_text().strip()


@pytest.mark.django_db(transaction=True)
def test_a_new_key_is_copied_once_and_revoking_it_asks_first(live_server, browser):
    from playwright.sync_api import expect

    make_learner(make_classroom(name="Bot club"), "erin")
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        revocations: list[str] = []
        page.on(
            "request",
            lambda request: (
                revocations.append(request.url)
                if request.method == "POST" and request.url.endswith("/revoke")
                else None
            ),
        )

        shown = _sign_in_and_create_a_key(page, live_server.url, "grid bot")
        assert shown.startswith("rf_")
        assert f"Bearer {shown}" in page.locator("pre.snippet").inner_text()
        page.click("button[data-copy=new-key]")
        expect(page.locator("button[data-copy=new-key]")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == shown
        me = requests.get(
            f"{live_server.url}/api/v1/me", headers={"Authorization": f"Bearer {shown}"}, timeout=10
        )
        assert (me.status_code, me.json()["key_scope"]) == (200, "trade")

        messages: list[str] = []

        def read_and_dismiss(dialog) -> None:  # type: ignore[no-untyped-def]
            messages.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", read_and_dismiss)
        page.click("table.keys button[type=submit]")
        assert messages and "grid bot" in messages[0]
        page.goto(f"{live_server.url}/api-keys/")
        expect(page.locator("table.keys .badge")).to_have_text("active")
        assert shown not in page.content()  # shown once: the next visit lists only its prefix

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("table.keys button[type=submit]")
        expect(page.locator("table.keys .badge")).to_have_text("revoked")
        assert len(revocations) == 1
        refused = requests.get(
            f"{live_server.url}/api/v1/me", headers={"Authorization": f"Bearer {shown}"}, timeout=10
        )
        assert refused.status_code == 401
        assert csp_violations(console) == []
    finally:
        context.close()


@pytest.mark.django_db(transaction=True)
def test_without_the_clipboard_the_copy_button_selects_the_key(live_server, browser):
    from playwright.sync_api import expect

    make_learner(make_classroom(name="Bot club"), "erin")
    context = browser.new_context()  # no clipboard permission, as on a plain-http site
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.add_init_script("delete Navigator.prototype.clipboard")
        shown = _sign_in_and_create_a_key(page, live_server.url, "grid bot")
        page.click("button[data-copy=new-key]")
        expect(page.locator("button[data-copy=new-key]")).to_have_text("Selected: press Ctrl+C")
        assert page.evaluate("window.getSelection().toString()").strip() == shown
    finally:
        context.close()


@pytest.mark.django_db(transaction=True)
def test_reloading_the_page_after_creating_a_key_creates_no_second_key(live_server, browser):
    from playwright.sync_api import expect

    make_learner(make_classroom(name="Bot club"), "erin")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        shown = _sign_in_and_create_a_key(page, live_server.url, "grid bot")
        assert shown.startswith("rf_")
        assert page.url == f"{live_server.url}/api-keys/"  # the form was answered by a redirect
        page.reload()
        expect(page.locator("table.keys tbody tr")).to_have_count(1)
        assert page.locator("#new-key").count() == 0  # shown once, and gone on reload
        assert shown not in page.content()
    finally:
        context.close()
