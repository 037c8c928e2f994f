"""The learner pages on a phone (390 px wide): open and closed positions are cards holding the
table's numbers, other wide tables scroll inside their own box instead of widening the page, and
a table stays scrolled when its live part refreshes; the trade ticket shows its preview before
the button that places the order."""

from __future__ import annotations

from decimal import Decimal

import pytest

from positions.services import order_place, position_close
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
FULL_WIDTH = {"width": 1200, "height": 800}

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
        # The history's orders and statement stay tables, scrolling in their own box.
        page.goto(f"{live_server.url}/accounts/{account.pk}/history/")
        page.wait_for_selector("main table.orders")
        tables = page.evaluate(TABLES)
        wide = [t for t in tables if t["table"] > PHONE["width"]]
        assert wide, tables  # the tables this test is about are wider than a phone
        for t in wide:
            assert t["box"] is not None and t["box"] <= PHONE["width"], t
            assert t["overflowX"] in ("auto", "scroll") and t["scrolled"] > 0, t
        for path in (f"/accounts/{account.pk}/", f"/accounts/{account.pk}/history/"):
            page.goto(f"{live_server.url}{path}")
            page_width = page.evaluate("document.documentElement.scrollWidth")
            assert page_width <= PHONE["width"], (path, page_width)
        # At full width the dashboard shows its positions table, which larger numbers than these
        # make wider than its box (a style rule here stands in for them). The live part is swapped in
        # again every two seconds: the table stays where the reader scrolled it, or its
        # right-hand columns could never be read.
        page.set_viewport_size(FULL_WIDTH)
        page.goto(f"{live_server.url}/accounts/{account.pk}/")
        page.evaluate(
            "() => document.styleSheets[0].insertRule("
            "'#positions-table table { min-width: 1600px; }', 0)"
        )
        tables = page.evaluate(TABLES)
        assert len(tables) == 1 and tables[0]["scrolled"] > 0, tables
        page.evaluate(
            "() => { const box = document.getElementById('positions-table');"
            " box.scrollLeft = 40; box.dataset.before = 'swap'; }"
        )
        page.wait_for_function(
            "() => { const box = document.getElementById('positions-table');"
            " return box && !box.dataset.before; }"
        )
        assert page.evaluate("document.getElementById('positions-table').scrollLeft") == 40
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


WIDE = {"width": 1280, "height": 900}

# Each row of a positions table by position id: its cells' text, spaces collapsed.
TABLE_ROWS = """(selector) => Object.fromEntries([...document.querySelectorAll(selector + " tbody tr")]
  .map((row) => [row.querySelector("a").getAttribute("href"),
                 [...row.cells].map((cell) => cell.textContent.replace(/\\s+/g, " ").trim())]))"""

# Each position card by position id: its fields' text, and whether all of it is on screen.
CARDS = """() => Object.fromEntries([...document.querySelectorAll("main .position-card")]
  .map((card) => [card.querySelector("a").getAttribute("href"), {
    visible: card.getBoundingClientRect().width > 0,
    right: Math.max(...[card, ...card.querySelectorAll("[data-field]")]
      .map((e) => e.getBoundingClientRect().right)),
    fields: Object.fromEntries([...card.querySelectorAll("[data-field]")]
      .map((e) => [e.dataset.field, e.textContent.replace(/\\s+/g, " ").trim()])),
  }]))"""

# Which table column each card field repeats.
OPEN_COLUMNS = {
    "position": 0,
    "size": 1,
    "entry": 2,
    "mark": 3,
    "pnl": 4,
    "collateral": 5,
    "margin-ratio": 6,
    "liquidation": 7,
    "distance": 8,
}
CLOSED_COLUMNS = {
    "position": 0,
    "size": 1,
    "entry": 2,
    "exit": 3,
    "pnl": 4,
    "fees": 5,
    "net-result": 6,
    "closed": 7,
}


def _cards_repeat_the_table(cards: dict, rows: dict, columns: dict[str, int]) -> None:
    assert cards.keys() == rows.keys()
    for href, card in cards.items():
        assert card["fields"].keys() == columns.keys(), href
        for field, column in columns.items():
            assert card["fields"][field] == rows[href][column], (href, field)


@pytest.mark.django_db(transaction=True)
def test_open_positions_are_cards_on_a_phone_with_the_numbers_of_the_table(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Phone class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    eth = make_instrument(classroom, symbol="ETHUSDT", mark="3000", tick_size=Decimal("0.01"))
    account = make_learner(classroom, "pia")
    btc_long = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.05", leverage=20
    ).position
    order_place(
        account_id=account.pk, instrument_id=eth.pk, side="short", quantity="1.5", leverage=15
    )
    # A 1x long can never be liquidated: its card says "none" and has no distance, as the table.
    unliquidatable = order_place(
        account_id=account.pk, instrument_id=eth.pk, side="long", quantity="0.5", leverage=1
    ).position
    closed = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", quantity="0.02", leverage=5
    ).position
    assert btc_long and unliquidatable and closed
    btc.mark_price = Decimal("59123.4")
    btc.save(update_fields=["mark_price"])
    position_close(position_id=closed.pk)
    dashboard = f"{live_server.url}/accounts/{account.pk}/"

    wide = browser.new_context(viewport=WIDE)
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        desk = wide.new_page()
        desk.set_default_timeout(15_000)
        sign_in(desk, live_server.url, "pia")
        desk.goto(dashboard)
        expect(desk.locator("#positions-table")).to_be_visible()
        expect(desk.locator("#positions-cards")).to_be_hidden()
        rows = desk.evaluate(TABLE_ROWS, "#positions-table")
        assert len(rows) == 3

        page = phone.new_page()
        page.set_default_timeout(15_000)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        sign_in(page, live_server.url, "pia")
        page.goto(dashboard)
        expect(page.locator("#positions-cards")).to_be_visible()
        expect(page.locator("#positions-table")).to_be_hidden()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        cards = page.evaluate(CARDS)
        assert all(c["visible"] and c["right"] <= PHONE["width"] for c in cards.values()), cards
        _cards_repeat_the_table(cards, rows, OPEN_COLUMNS)
        never = cards[f"/positions/{unliquidatable.pk}/"]["fields"]
        assert (never["liquidation"], never["distance"]) == ("none", "—")
        assert "{#" not in page.inner_text("main")

        # The live refresh redraws the cards on the phone and the table on the desk alike.
        btc.mark_price = Decimal("58000")
        btc.save(update_fields=["mark_price"])
        card = page.locator(f'.position-card[data-position="{btc_long.pk}"]')
        expect(card.locator('[data-field="mark"]')).to_have_text("58,000.0")
        expect(card.locator('[data-field="pnl"]')).to_contain_text("-100.00")
        expect(desk.locator("#positions-table tbody tr", has_text="58,000.0")).to_have_count(1)
        _cards_repeat_the_table(
            page.evaluate(CARDS), desk.evaluate(TABLE_ROWS, "#positions-table"), OPEN_COLUMNS
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        # History: closed positions are cards on the phone too, with the table's numbers.
        desk.goto(f"{dashboard}history/")
        page.goto(f"{dashboard}history/")
        cards = page.evaluate(CARDS)
        assert len(cards) == 1 and all(c["visible"] for c in cards.values()), cards
        assert all(c["right"] <= PHONE["width"] for c in cards.values()), cards
        _cards_repeat_the_table(cards, desk.evaluate(TABLE_ROWS, ".wide-only"), CLOSED_COLUMNS)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert csp_violations(console) == []
    finally:
        phone.close()
        wide.close()
