"""A position page left open through its liquidation keeps telling the path after it, as the
chart beside it does."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import F

from liquidation.models import LiquidationEvent, PriceTick
from positions.models import Position
from positions.services import position_open
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.engine.helpers import set_price
from tests.factories import make_classroom, make_instrument
from tests.invariants import assert_ledger_invariants

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_lesson_of_a_liquidation_follows_the_mark_while_the_page_is_open(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Crash class", max_leverage=20)
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "liv")
    # Long 0.5 at 60,000, 20x: the liquidation price is 57,229.0.
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    page = browser.new_page()
    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        sign_in(page, live_server.url, "liv")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        expect(page.get_by_test_id("position-status")).to_have_text("Open")
        set_price(btc, "57000")
        expect(page.get_by_test_id("position-status")).to_contain_text("Liquidated at 57,000.0")
        lesson = page.get_by_test_id("lesson")
        expect(lesson).to_contain_text("So far the mark has gone no further than 57,000.0")
        # The crash goes on: the chart draws it, and the lesson beside it says so too, rather
        # than still saying the mark went no further.
        # The chart draws at most a point a second (the engine ticks once a second): the
        # page may show the liquidation within the second it happened, so the crash's next
        # mark is made to come a second later, by moving the story so far back.
        earlier = timedelta(seconds=2)
        PriceTick.objects.filter(instrument=btc).update(created_at=F("created_at") - earlier)
        LiquidationEvent.objects.filter(position=position).update(
            created_at=F("created_at") - earlier
        )
        Position.objects.filter(pk=position.pk).update(
            opened_at=F("opened_at") - earlier, closed_at=F("closed_at") - earlier
        )
        set_price(btc, "54150")
        expect(page.locator("#mark-chart")).to_have_attribute("data-points", "3")
        expect(lesson).to_contain_text(
            "After the liquidation at 57,000.0 the mark went a further 5.00% against the "
            "position (to 54,150.0)."
        )
        expect(lesson).not_to_contain_text("no further")
    finally:
        page.close()
    assert csp_violations(console) == []
    assert_ledger_invariants()


# Counts the swaps of the page's live part, to wait for refreshes without timing them.
COUNT_SWAPS = """() => {
  window.liveSwaps = 0;
  document.addEventListener("htmx:afterSettle", () => { window.liveSwaps += 1; });
}"""


@pytest.mark.parametrize("opened", ["before the liquidation", "after the liquidation"])
def test_a_liquidated_position_page_refreshes_without_errors_on_the_console(
    live_server, browser, opened
):
    """A liquidated position's page goes on refreshing (its lesson follows the mark), and each
    refresh hides the forms and resting orders that ended with the position: finding them
    gone after the first was reported as an error on the console every two seconds."""
    from playwright.sync_api import expect

    classroom = make_classroom(name="Quiet console class", max_leverage=20)
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "cole")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    page = browser.new_page()
    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    live = f"{live_server.url}/positions/{position.pk}/live/"
    try:
        sign_in(page, live_server.url, "cole")
        if opened == "after the liquidation":
            set_price(btc, "57000")
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        page.evaluate(COUNT_SWAPS)
        if opened == "before the liquidation":
            expect(page.get_by_test_id("position-status")).to_have_text("Open")
            set_price(btc, "57000")
        expect(page.get_by_test_id("position-status")).to_contain_text("Liquidated at 57,000.0")
        swaps = page.evaluate("window.liveSwaps")
        for refresh in (1, 2, 3):
            with page.expect_response(live):
                pass
            page.wait_for_function(f"() => window.liveSwaps >= {swaps + refresh}")
        expect(page.locator("#position-actions form")).to_have_count(0)
        expect(page.locator("#position-orders")).to_be_hidden()
    finally:
        page.close()
    assert [m for m in console if "htmx:" in m] == []
    assert csp_violations(console) == []
