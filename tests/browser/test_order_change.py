"""Changing a resting order in the browser, on a phone: from the dashboard's Change link to
the replaced order, its new hold on the dashboard."""

from __future__ import annotations

import re

import pytest

from positions.models import Order
from positions.services import order_place
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument
from tests.invariants import assert_ledger_invariants

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 390, "height": 844}


def test_a_student_moves_a_resting_limit_from_the_dashboard_on_a_phone(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Change class", max_leverage=20)
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "cleo")
    old = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="59000",
    )  # fmt: skip
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    console: list[str] = []
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda message: console.append(message.text))
        sign_in(page, live_server.url, "cleo")
        page.goto(f"{live_server.url}/accounts/{account.pk}/")
        page.get_by_role("link", name="Change").click()
        expect(page.get_by_role("heading", name=f"Change order #{old.pk}")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert page.input_value("#id_price") == "59000"
        page.fill("#id_price", "58000")
        page.get_by_role("button", name="Replace the order").click()
        expect(page).to_have_url(re.compile(rf"/accounts/{account.pk}/$"))
        new = Order.objects.get(replaces=old)
        expect(page.locator("body")).to_contain_text(
            f"Order #{old.pk} replaced by order #{new.pk}: limit long 0.100 BTCUSDT at 58,000.0."
        )
        # The dashboard lists the new order with what it holds now: 580 margin + 2.90 fee.
        expect(page.get_by_test_id("order-hold")).to_have_text("holds 582.90")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert csp_violations(console) == []
    finally:
        context.close()
    assert_ledger_invariants()
