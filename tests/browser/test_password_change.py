"""Changing a password in the browser, with a form a password manager can file under its user."""

from __future__ import annotations

import pytest

from accounts.models import User
from tests.browser.conftest import make_learner, sign_in
from tests.factories import make_classroom

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_password_form_names_its_user_and_changes_the_password(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Password class")
    make_learner(classroom, "pia")
    page = browser.new_page()
    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        sign_in(page, live_server.url, "pia")
        page.goto(f"{live_server.url}/password/")
        # The browser finds whose password it is (Chromium says so on the console otherwise).
        assert [m for m in console if "username" in m] == []
        expect(page.locator("input[autocomplete=username]")).to_have_value("pia")
        page.fill("#id_old_password", "a-long-passphrase-42")
        page.fill("#id_new_password1", "another-long-passphrase-7")
        page.fill("#id_new_password2", "another-long-passphrase-7")
        page.get_by_role("button", name="Change password").click()
        page.wait_for_url("**/password/done/")
    finally:
        page.close()
    assert User.objects.get(username="pia").check_password("another-long-passphrase-7")
