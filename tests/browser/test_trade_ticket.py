"""The trade ticket tells what the balance can open, fills that size in on request, and marks
the field its live preview refuses."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from decimal import Decimal

import pytest

from positions.models import Instrument
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ticket(live_server, browser) -> Iterator[tuple[object, list[str]]]:
    """A learner's trade ticket on a 60,000 BTC market (10,000 free, up to 20x), and the
    browser console's messages."""
    classroom = make_classroom(name="Ticket class", max_leverage=20)
    make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "sam")
    page = browser.new_page()
    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        sign_in(page, live_server.url, "sam")
        page.goto(f"{live_server.url}/accounts/{account.pk}/trade/")
        yield page, console
    finally:
        page.close()


def test_use_it_fills_in_the_largest_quantity_the_balance_opens(ticket):
    from playwright.sync_api import expect

    page, console = ticket
    page.fill("#id_leverage", "10")
    page.dispatch_event("#id_leverage", "change")
    # 10,000 / (60,000 x (1/10 + 0.05%)) = 1.658 whole lots of 0.001, fee included.
    expect(page.get_by_test_id("max-quantity")).to_have_text("1.658")
    page.click("[data-fill-quantity]")
    expect(page.locator("#id_quantity")).to_have_value("1.658")
    expect(page.get_by_test_id("preview-max-loss")).to_have_text("9,948.00")
    assert "9,997.74" in page.inner_text("#preview")  # margin and fee: all but 2.26
    assert csp_violations(console) == []


def test_the_live_preview_marks_the_field_it_refuses_in_red(ticket):
    from playwright.sync_api import expect

    page, console = ticket
    quantity = page.locator(".field", has=page.locator("#id_quantity"))
    page.fill("#id_quantity", "0.0015")  # not a whole number of 0.001 lots
    expect(page.locator("#id_quantity_error")).to_contain_text("multiple of the lot size")
    expect(quantity).to_have_class(re.compile(r"\bhas-error\b"))
    # Announced with the field: a screen reader reads the refusal when the field has focus.
    field = page.locator("#id_quantity")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_attribute("aria-describedby", re.compile(r"\bid_quantity_error\b"))
    page.fill("#id_quantity", "0.002")
    expect(page.get_by_test_id("preview-lp")).to_be_visible()
    expect(quantity).not_to_have_class(re.compile(r"\bhas-error\b"))
    expect(field).not_to_have_attribute("aria-invalid", "true")
    expect(field).to_have_attribute("aria-describedby", "id_quantity_helptext")
    assert csp_violations(console) == []


def test_the_ticket_shows_only_the_price_its_order_type_uses(ticket):
    from playwright.sync_api import expect

    page, console = ticket
    limit, stop = page.locator("#id_price"), page.locator("#id_stop_price")
    # A market order fills at the market: neither price is there to be typed in.
    expect(limit).to_be_hidden()
    expect(stop).to_be_hidden()
    page.select_option("#id_type", "limit")
    expect(limit).to_be_visible()
    expect(stop).to_be_hidden()
    page.fill("#id_quantity", "0.01")
    page.fill("#id_price", "59000")
    expect(page.get_by_test_id("preview")).to_contain_text("59,000.0")
    page.select_option("#id_type", "stop")
    expect(stop).to_be_visible()
    expect(limit).to_be_hidden()
    # Back to market, the limit typed earlier is neither shown nor sent: the preview quotes
    # a market order instead of refusing a price the student can no longer see.
    page.select_option("#id_type", "market")
    expect(limit).to_be_hidden()
    expect(page.get_by_test_id("preview")).to_contain_text("60,000.0")
    expect(page.locator("#id_price_error")).to_have_text("")
    page.click("button.primary")
    page.wait_for_url("**/positions/*/")
    assert csp_violations(console) == []


def test_a_limit_order_shows_its_hold_before_and_after_it_is_placed_until_cancelled(ticket):
    from playwright.sync_api import expect

    page, console = ticket
    page.select_option("#id_type", "limit")
    page.fill("#id_leverage", "10")
    page.dispatch_event("#id_leverage", "change")
    page.fill("#id_quantity", "0.5")
    page.fill("#id_price", "59000")
    # 0.5 x 59,000 / 10 = 2,950 margin + 14.75 fee at the limit.
    expect(page.get_by_test_id("preview-hold")).to_have_text("2,964.75")
    expect(page.get_by_test_id("preview-hold-note")).to_contain_text("holds 2,964.75")
    page.click("button.primary")
    page.wait_for_url(re.compile(r"/accounts/\d+/$"))
    expect(page.get_by_test_id("order-margin")).to_have_text("2,964.75")
    expect(page.get_by_test_id("free-balance")).to_have_text("7,035.25")
    expect(page.get_by_test_id("equity")).to_have_text("10,000.00")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_test_id("order-margin")).to_have_text("0.00")
    expect(page.get_by_test_id("free-balance")).to_have_text("10,000.00")
    assert csp_violations(console) == []


def test_place_order_looks_disabled_while_its_submit_is_on_its_way(ticket):
    from playwright.sync_api import expect

    page, console = ticket
    button = page.get_by_role("button", name="Place order")
    ready = button.evaluate(
        "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).cursor]"
    )
    page.fill("#id_quantity", "0.01")
    expect(page.get_by_test_id("preview-lp")).to_be_visible()
    # The page stays as it is once the ticket has set the button waiting, as on a slow
    # network before the answer comes (a pending navigation would hold Playwright's checks).
    page.evaluate(
        "document.getElementById('ticket')"
        ".addEventListener('submit', (event) => event.preventDefault())"
    )
    button.click()
    expect(button).to_be_disabled()
    expect(button).to_have_attribute("aria-busy", "true")
    waiting = button.evaluate(
        "b => [getComputedStyle(b).backgroundColor, getComputedStyle(b).cursor]"
    )
    assert waiting[0] != ready[0]  # greyed out, not the accent of a button that works
    assert (ready[1], waiting[1]) == ("pointer", "progress")
    assert csp_violations(console) == []


def test_the_preview_follows_the_mark_while_the_ticket_is_left_open(ticket):
    from playwright.sync_api import expect

    page, console = ticket
    page.fill("#id_leverage", "10")
    page.dispatch_event("#id_leverage", "change")
    page.fill("#id_quantity", "0.1")
    # 0.1 x 60,000 / 10 = 600 at stake, liquidated 0.4% above the bankruptcy price 54,000.
    expect(page.get_by_test_id("preview-max-loss")).to_have_text("600.00")
    expect(page.get_by_test_id("preview-lp")).to_have_text("54,216.9")
    btc = Instrument.objects.get(symbol="BTCUSDT", classroom__name="Ticket class")
    btc.mark_price = Decimal("50000")
    btc.save(update_fields=["mark_price"])
    # Nothing typed: the student reading the preview sees what the order costs now, not what
    # it cost when the ticket was last touched.
    expect(page.get_by_test_id("sizing")).to_contain_text("mark 50,000.0")
    expect(page.get_by_test_id("preview-max-loss")).to_have_text("500.00")
    expect(page.get_by_test_id("preview-lp")).to_have_text("45,180.8")
    assert csp_violations(console) == []


def test_typing_while_a_preview_is_on_its_way_puts_no_error_on_the_console(ticket):
    from playwright.sync_api import Error, Route, expect

    page, console = ticket
    page.evaluate(
        "window.previewTriggers = 0; document.getElementById('ticket')"
        ".addEventListener('htmx:trigger', () => { window.previewTriggers += 1; })"
    )
    held: list[Route] = []

    def hold(route: Route) -> None:  # as on a slow network: no answer yet
        held.append(route)

    page.route("**/trade/preview/", hold)
    with page.expect_request("**/trade/preview/"):
        page.fill("#id_quantity", "0.01")
    asked = page.evaluate("window.previewTriggers")
    page.fill("#id_quantity", "0.02")
    # The ticket asks again while the first preview is still on its way.
    page.wait_for_function("asked => window.previewTriggers > asked", arg=asked)
    page.unroute("**/trade/preview/", hold)
    for route in held:
        with contextlib.suppress(Error):  # a request the page cut off cannot be answered
            route.continue_()
    # The newest quantity is quoted in the end, and nothing was reported as an error.
    expect(page.get_by_test_id("preview")).to_contain_text("0.020 · notional 1,200.00")
    assert [m for m in console if "htmx:" in m] == []
    assert csp_violations(console) == []
