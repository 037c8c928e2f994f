"""A page left open after its sign-in has ended leads back to the sign-in page, whole."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from positions.services import position_open
from tests.browser.conftest import make_learner, sign_in
from tests.factories import make_classroom, make_instrument

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("page_name", ["dashboard", "trade", "position"])
def test_a_live_page_whose_sign_in_ended_goes_to_the_sign_in_page(live_server, browser, page_name):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Session class", max_leverage=20)
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "sol")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )
    path = (
        reverse("position", args=[position.pk])
        if page_name == "position"
        else reverse(page_name, args=[account.pk])
    )
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "sol")
        page.goto(f"{live_server.url}{path}")
        # The sign-in ends while the page is open (signed out elsewhere, or a school day over).
        context.clear_cookies(name="sessionid")
        # The next refresh brings the whole sign-in page, which leads back here afterwards,
        # rather than the sign-in page swapped into the part that refreshes.
        expect(page).to_have_url(re.compile(rf"/login/\?next={re.escape(path)}$"))
        expect(page.locator("header.topbar")).to_have_count(1)
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    finally:
        context.close()
