"""The learner pages on a phone (390 px wide): wide tables scroll inside their own box instead
of widening the page, and stay scrolled when their live part refreshes; the trade ticket shows
its preview before the button that places the order."""

from __future__ import annotations

import pytest

from positions.services import order_place, position_close
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}

# For each wide table: how wide it is, the box it can scroll in, and whether that box scrolls.
TABLES = """() => [...document.querySelectorAll("main table")].map((table) => {
  const box = table.closest(".table-wrap");
  let scrolled = 0;
  if (box) { box.scrollLeft = 80; scrolled = box.scrollLeft; box.scrollLeft = 0; }
  return {
    table: table.getBoundingClientRect().width,
    box: box ? box.getBoundingClientRect().width : null,
    overflowX: box ? getComputedStyle(box).overflowX : null,
    scrolled,
  };
})"""


@pytest.mark.django_db(transaction=True)
def test_wide_tables_scroll_in_their_box_and_the_page_does_not(live_server, browser):
    classroom = make_classroom(name="Phone class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "pia")
    for side in ("long", "short"):
        order_place(
            account_id=account.pk, instrument_id=btc.pk, side=side, quantity="0.01", leverage=10
        )
    closed = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.02", leverage=5
    ).position
    assert closed is not None
    position_close(position_id=closed.pk)
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        sign_in(page, live_server.url, "pia")
        for path in (f"/accounts/{account.pk}/", f"/accounts/{account.pk}/history/"):
            page.goto(f"{live_server.url}{path}")
            page.wait_for_selector("main table")
            tables = page.evaluate(TABLES)
            assert tables, path
            wide = [t for t in tables if t["table"] > PHONE["width"]]
            assert wide, (path, tables)  # the tables this test is about are wider than a phone
            for t in wide:
                assert t["box"] is not None and t["box"] <= PHONE["width"], (path, t)
                assert t["overflowX"] in ("auto", "scroll") and t["scrolled"] > 0, (path, t)
            page_width = page.evaluate("document.documentElement.scrollWidth")
            assert page_width <= PHONE["width"], (path, page_width)
        # The dashboard's live part is swapped in again every two seconds: the positions table
        # stays where the reader scrolled it, or its right-hand columns could never be read.
        page.goto(f"{live_server.url}/accounts/{account.pk}/")
        page.evaluate(
            "() => { const box = document.getElementById('positions-table');"
            " box.scrollLeft = 120; box.dataset.before = 'swap'; }"
        )
        page.wait_for_function(
            "() => { const box = document.getElementById('positions-table');"
            " return box && !box.dataset.before; }"
        )
        assert page.evaluate("document.getElementById('positions-table').scrollLeft") == 120
        assert csp_violations(console) == []
    finally:
        context.close()


@pytest.mark.django_db(transaction=True)
def test_the_ticket_shows_the_preview_before_the_place_order_button(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Phone class")
    make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "pia")
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "pia")
        page.goto(f"{live_server.url}/accounts/{account.pk}/trade/")
        page.fill("#id_quantity", "0.1")
        expect(page.locator('[data-testid="preview-lp"]')).to_be_visible()
        preview = page.locator("#preview").bounding_box()
        button = page.locator("button:has-text('Place order')").bounding_box()
        assert preview is not None and button is not None
        assert preview["y"] + preview["height"] <= button["y"]  # read first, then place
        assert "{#" not in page.inner_text("main")
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    finally:
        context.close()
