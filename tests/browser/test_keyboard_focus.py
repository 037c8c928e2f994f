"""The live parts of a page refresh under a keyboard user's focus without taking it away."""

from __future__ import annotations

import re

import pytest

from positions.models import Order
from positions.services import order_place, position_open
from tests.browser.conftest import make_learner, sign_in
from tests.factories import make_classroom, make_instrument
from tests.invariants import assert_ledger_invariants

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _wait_for_a_refresh(page, url: str) -> None:
    """Wait until the live part has been fetched and swapped in again."""
    with page.expect_response(lambda response: response.url == url):
        pass
    page.wait_for_function("!document.activeElement || !document.activeElement.dataset.old")


def test_a_focused_cancel_button_keeps_the_focus_across_the_dashboard_refresh(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Keyboard class", max_leverage=20)
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "kai")
    position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="59000",
    )  # fmt: skip
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "kai")
        page.goto(f"{live_server.url}/accounts/{account.pk}/")
        live = f"{live_server.url}/accounts/{account.pk}/live/"

        link = page.locator("#positions-table a").first
        link.focus()
        link.evaluate("element => { element.dataset.old = '1'; }")
        _wait_for_a_refresh(page, live)
        # A new link, swapped in by the refresh, holds the focus: the old one is gone.
        assert page.evaluate("document.activeElement.dataset.old") is None
        assert page.evaluate("document.activeElement.getAttribute('href')") == link.get_attribute(
            "href"
        )

        cancel = page.get_by_role("button", name="Cancel")
        cancel.focus()
        cancel.evaluate("element => { element.dataset.old = '1'; }")
        _wait_for_a_refresh(page, live)
        assert page.evaluate("document.activeElement.closest('form').getAttribute('action')") == (
            f"/orders/{order.pk}/cancel/"
        )
        # The keyboard user presses Enter where the focus is, and the order is cancelled.
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(rf"/accounts/{account.pk}/$"))
        expect(page.locator("ul.messages")).to_contain_text(f"Order #{order.pk}")
    finally:
        context.close()
    order.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert_ledger_invariants()
