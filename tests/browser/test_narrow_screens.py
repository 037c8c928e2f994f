"""The learner pages on a phone (390 px wide): open and closed positions, orders and the statement
are cards holding the tables' words and numbers, no page is wider than the screen, and a table
stays scrolled when its live part refreshes; the trade ticket shows its preview before the button
that places the order; the API keys are cards too, each with its status and its Revoke button."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from django.utils import timezone

from positions.services import order_place, position_close
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument

if TYPE_CHECKING:
    from playwright.sync_api import Page

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

# A row or a card is known by its order or API key id, else by the position its first link leads to
# (positions), else by its place (the statement, the leaderboard).
KEY = """(e, i) => e.dataset.order || e.dataset.key || e.querySelector("a")?.getAttribute("href")
  || String(i)"""

# Each body row of a table: its cells' text, spaces collapsed.
TABLE_ROWS = f"""(selector) => Object.fromEntries([...document.querySelectorAll(selector + " tbody tr")]
  .map((row, i) => [({KEY})(row, i),
                    [...row.cells].map((cell) => cell.textContent.replace(/\\s+/g, " ").trim())]))"""

# Each card: its fields' text, and whether all of it is on screen.
CARDS = f"""(selector) => Object.fromEntries([...document.querySelectorAll(selector)]
  .map((card, i) => [({KEY})(card, i), {{
    visible: card.getBoundingClientRect().width > 0,
    right: Math.max(...[card, ...card.querySelectorAll("[data-field]")]
      .map((e) => e.getBoundingClientRect().right)),
    fields: Object.fromEntries([...card.querySelectorAll("[data-field]")]
      .map((e) => [e.dataset.field, e.textContent.replace(/\\s+/g, " ").trim()])),
  }}]))"""
POSITION_CARDS = "main .position-card"

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
    "average-exit": 3,
    "pnl": 4,
    "fees": 5,
    "net-result": 6,
    "closed": 7,
}


@contextmanager
def _desk_and_phone(browser, url: str, username: str) -> Iterator[tuple[Page, Page, list[str]]]:
    """The learner signed in on a full-width screen and on a phone, with the phone's console."""
    wide = browser.new_context(viewport=WIDE)
    phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    console: list[str] = []
    try:
        desk, page = wide.new_page(), phone.new_page()
        page.on("console", lambda message: console.append(message.text))
        for each in (desk, page):
            each.set_default_timeout(15_000)
            sign_in(each, url, username)
        yield desk, page, console
    finally:
        phone.close()
        wide.close()


def _table_on_the_desk_and_cards_on_the_phone(
    desk: Page, page: Page, table: str, cards: str
) -> None:
    """At full width the table shows and its cards do not; on the phone the other way round."""
    from playwright.sync_api import expect

    expect(desk.locator(table)).to_be_visible()
    expect(desk.locator(cards)).to_be_hidden()
    expect(page.locator(cards)).to_be_visible()
    expect(page.locator(table)).to_be_hidden()


def _cards_repeat_the_table(cards: dict, rows: dict, columns: dict[str, int]) -> None:
    """Every card repeats its row; a field a card leaves out is an empty cell of the table."""
    assert cards and cards.keys() == rows.keys(), (cards, rows)
    for key, card in cards.items():
        assert card["fields"].keys() <= columns.keys(), (key, card["fields"])
        for field, column in columns.items():
            assert card["fields"].get(field, "") == rows[key][column], (key, field)


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

    with _desk_and_phone(browser, live_server.url, "pia") as (desk, page, console):
        desk.goto(dashboard)
        expect(desk.locator("#positions-table")).to_be_visible()
        expect(desk.locator("#positions-cards")).to_be_hidden()
        rows = desk.evaluate(TABLE_ROWS, "#positions-table")
        assert len(rows) == 3

        page.goto(dashboard)
        expect(page.locator("#positions-cards")).to_be_visible()
        expect(page.locator("#positions-table")).to_be_hidden()
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        cards = page.evaluate(CARDS, POSITION_CARDS)
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
            page.evaluate(CARDS, POSITION_CARDS),
            desk.evaluate(TABLE_ROWS, "#positions-table"),
            OPEN_COLUMNS,
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        # History: closed positions are cards on the phone too, with the table's numbers.
        desk.goto(f"{dashboard}history/")
        page.goto(f"{dashboard}history/")
        cards = page.evaluate(CARDS, POSITION_CARDS)
        assert len(cards) == 1 and all(c["visible"] for c in cards.values()), cards
        assert all(c["right"] <= PHONE["width"] for c in cards.values()), cards
        _cards_repeat_the_table(
            cards, desk.evaluate(TABLE_ROWS, "#closed-positions-table"), CLOSED_COLUMNS
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert csp_violations(console) == []


ORDER_COLUMNS = {
    "order": 0,
    "type": 1,
    "side": 2,
    "quantity": 3,
    "prices": 4,
    "status": 5,
    "reason": 6,
    "placed": 7,
}
STATEMENT_COLUMNS = {"date": 0, "what": 1, "amount": 2, "balance": 3}
LEADERBOARD_COLUMNS = {
    "rank": 0,
    "student": 1,
    "equity": 2,
    "return": 3,
    "drawdown": 4,
    "liquidations": 5,
}


@pytest.mark.django_db(transaction=True)
def test_orders_and_statement_are_cards_on_a_phone_with_the_words_of_the_tables(
    live_server, browser
):

    from positions.models import Order
    from positions.services import order_cancel
    from tests.engine.helpers import set_price

    classroom = make_classroom(name="Phone class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "pia")
    # A limit order that rests, then is refused when it triggers (the classroom's trading
    # window ended meanwhile): the reason is the longest text of the orders table.
    refused = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="55000",
    )  # fmt: skip
    order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="1.5", leverage=10,
        take_profit="70000",
    )  # fmt: skip
    cancelled = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.01", leverage=5, stop_price="50000",
    )  # fmt: skip
    order_cancel(order_id=cancelled.pk)
    order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="limit",
        quantity="0.01", leverage=5, price="70000",
    )  # fmt: skip
    classroom.trading_closes_at = timezone.now()
    classroom.save(update_fields=["trading_closes_at"])
    set_price(btc, "55000")
    refused.refresh_from_db()
    assert refused.status == Order.Status.REJECTED and refused.reject_reason
    history = f"{live_server.url}/accounts/{account.pk}/history/"

    with _desk_and_phone(browser, live_server.url, "pia") as (desk, page, console):
        desk.goto(history)
        page.goto(history)
        for table, cards in (
            ("#orders-table", "#orders-cards"),
            ("#statement-table", "#statement-cards"),
        ):
            _table_on_the_desk_and_cards_on_the_phone(desk, page, table, cards)
        orders = desk.evaluate(TABLE_ROWS, "#orders-table")
        # At full width the whole table fits, its reasons and prices wrapping: nothing to scroll to.
        width, room = desk.evaluate(
            "() => [document.getElementById('orders-table').scrollWidth,"
            " document.getElementById('orders-table').clientWidth]"
        )
        assert width <= room, (width, room)
        assert len(orders) == 4 and refused.reject_reason in orders[str(refused.pk)][6]
        cards = page.evaluate(CARDS, "#orders-cards .order-card")
        assert all(c["visible"] and c["right"] <= PHONE["width"] for c in cards.values()), cards
        _cards_repeat_the_table(cards, orders, ORDER_COLUMNS)
        statement = desk.evaluate(TABLE_ROWS, "#statement-table")
        # The starting balance, the position it opened, and three orders' holds with the two
        # releases of the cancelled and the refused one.
        assert len(statement) == 7
        cards = page.evaluate(CARDS, "#statement-cards .row-card")
        assert all(c["visible"] and c["right"] <= PHONE["width"] for c in cards.values()), cards
        _cards_repeat_the_table(cards, statement, STATEMENT_COLUMNS)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]

        assert "{#" not in page.inner_text("main")
        assert csp_violations(console) == []


@pytest.mark.django_db(transaction=True)
def test_the_leaderboard_fits_a_phone_with_the_numbers_of_its_table(live_server, browser):

    from tests.engine.helpers import set_price

    classroom = make_classroom(name="Phone class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "pia")
    # A long name and a liquidation: the widest a leaderboard row gets.
    rival = make_learner(classroom, "a_classmate_with_a_rather_long_username_2026")
    order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=5
    )
    order_place(
        account_id=rival.pk, instrument_id=btc.pk, side="short", quantity="0.5", leverage=20
    )
    set_price(btc, "64000")
    assert rival.positions.filter(status="liquidated").count() == 1
    leaderboard = f"{live_server.url}/accounts/{account.pk}/leaderboard/"

    with _desk_and_phone(browser, live_server.url, "pia") as (desk, page, console):
        desk.goto(leaderboard)
        page.goto(leaderboard)
        _table_on_the_desk_and_cards_on_the_phone(
            desk, page, "#leaderboard-table", "#leaderboard-cards"
        )
        ranking = desk.evaluate(TABLE_ROWS, "#leaderboard-table")
        assert [row[1] for row in ranking.values()] == ["pia", rival.user.username]
        cards = page.evaluate(CARDS, "#leaderboard-cards .row-card")
        assert all(c["visible"] and c["right"] <= PHONE["width"] for c in cards.values()), cards
        _cards_repeat_the_table(cards, ranking, LEADERBOARD_COLUMNS)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert csp_violations(console) == []


KEY_COLUMNS = {
    "name": 0,
    "prefix": 1,
    "scope": 2,
    "created": 3,
    "expires": 4,
    "last-used": 5,
    "status": 6,
    "revoke": 7,
}


@pytest.mark.django_db(transaction=True)
def test_api_keys_are_cards_on_a_phone_and_one_is_revoked_from_its_card(live_server, browser):
    from datetime import timedelta

    import requests
    from django.utils import timezone
    from playwright.sync_api import expect

    from api.models import ApiKey
    from api.services import api_key_create, api_key_revoke

    account = make_learner(make_classroom(name="Bot club"), "pia")
    user_id = account.user_id
    expiring = api_key_create(
        user_id=user_id, name="nightly rebalancer", expires_at=timezone.now() + timedelta(days=30)
    )
    expired = api_key_create(user_id=user_id, name="last term's bot").api_key
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    revoked = api_key_create(user_id=user_id, name="leaked key").api_key
    api_key_revoke(user_id=user_id, api_key_id=revoked.pk)
    # The longest name a key may have, with a trade scope: the widest a row of the table gets.
    bot = api_key_create(user_id=user_id, name="momentum bot " * 6 + "v2", scope="trade")
    # A name may have no space at all (a file name, say): it wraps rather than widening the page.
    api_key_create(user_id=user_id, name=("grid_bot_btcusdt_" * 5)[:80])

    def me_with_the_bot_key() -> int:
        headers = {"Authorization": f"Bearer {bot.raw}"}
        return requests.get(f"{live_server.url}/api/v1/me", headers=headers, timeout=10).status_code

    assert me_with_the_bot_key() == 200  # a last use to show
    keys = f"{live_server.url}/api-keys/"

    with _desk_and_phone(browser, live_server.url, "pia") as (desk, page, console):
        desk.goto(keys)
        page.goto(keys)
        _table_on_the_desk_and_cards_on_the_phone(desk, page, "#keys-table", "#keys-cards")
        rows = desk.evaluate(TABLE_ROWS, "#keys-table")
        assert len(rows) == 5
        # At full width the whole table fits, long names wrapping: nothing to scroll to.
        width, room = desk.evaluate(
            "() => [document.getElementById('keys-table').scrollWidth,"
            " document.getElementById('keys-table').clientWidth]"
        )
        assert width <= room, (width, room)
        assert [rows[str(k.pk)][6] for k in (expiring.api_key, expired, revoked, bot.api_key)] == [
            "active",
            "expired",
            "revoked",
            "active",
        ]
        cards = page.evaluate(CARDS, "#keys-cards .key-card")
        assert all(c["visible"] and c["right"] <= PHONE["width"] for c in cards.values()), cards
        _cards_repeat_the_table(cards, rows, KEY_COLUMNS)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert "{#" not in page.inner_text("main")

        # Revoking from a card asks first, as from the table: dismissed, nothing changes.
        card = page.locator(f'.key-card[data-key="{bot.api_key.pk}"]')
        messages: list[str] = []

        def read_and_dismiss(dialog) -> None:  # type: ignore[no-untyped-def]
            messages.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", read_and_dismiss)
        card.get_by_role("button", name="Revoke").click()
        assert messages and bot.api_key.name in messages[0]
        page.reload()
        expect(card.locator('[data-field="status"]')).to_have_text("active")
        assert me_with_the_bot_key() == 200

        page.once("dialog", lambda dialog: dialog.accept())
        card.get_by_role("button", name="Revoke").click()
        expect(card.locator('[data-field="status"]')).to_have_text("revoked")
        expect(card.get_by_role("button", name="Revoke")).to_have_count(0)
        assert me_with_the_bot_key() == 401
        other = page.locator(f'.key-card[data-key="{expiring.api_key.pk}"] [data-field="status"]')
        expect(other).to_have_text("active")  # only the card's own key was revoked
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert csp_violations(console) == []


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_notice_of_refused_orders_fits_a_phone(live_server, browser):
    from playwright.sync_api import expect

    from positions.models import Order
    from tests.engine.helpers import set_price

    classroom = make_classroom(name="Phone class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "pia")
    stops = [
        order_place(
            account_id=account.pk,
            instrument_id=btc.pk,
            side="long",
            type="stop",
            quantity=quantity,
            leverage=10,
            stop_price="61000",
        )
        for quantity in ("0.1", "0.25")
    ]
    # The trading window ends before the stops trigger: the reason, with its date and time, is
    # the longest text of the notice.
    classroom.trading_closes_at = timezone.now()
    classroom.save(update_fields=["trading_closes_at"])
    set_price(btc, "61500")
    reasons = {}
    for stop in stops:
        stop.refresh_from_db()
        assert stop.status == Order.Status.REJECTED and stop.reject_reason
        reasons[str(stop.pk)] = stop.reject_reason

    with _desk_and_phone(browser, live_server.url, "pia") as (desk, page, console):
        for each in (desk, page):
            each.goto(f"{live_server.url}/accounts/{account.pk}/")
            notice = each.locator("#refused-orders")
            expect(notice).to_be_visible()
            expect(notice.get_by_role("heading", name="Recently refused")).to_be_visible()
        items = page.evaluate(
            """() => Object.fromEntries([...document.querySelectorAll("#refused-orders li")]
              .map((li) => [li.dataset.order, {
                reason: li.querySelector("[data-field=reason]").textContent.trim(),
                right: Math.max(...[li, ...li.querySelectorAll("*")]
                  .map((e) => e.getBoundingClientRect().right)),
              }]))"""
        )
        assert {key: item["reason"] for key, item in items.items()} == reasons
        assert all(item["right"] <= PHONE["width"] for item in items.values()), items
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        # Still there, and still within the screen, after the live part is swapped in again.
        page.evaluate(
            "() => { document.getElementById('refused-orders').dataset.before = 'swap'; }"
        )
        page.wait_for_function(
            "() => { const notice = document.getElementById('refused-orders');"
            " return notice && !notice.dataset.before; }"
        )
        expect(page.locator("#refused-orders li")).to_have_count(2)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert csp_violations(console) == []


# Each stat whose number reaches past its card, with the page's width.
SPILLED_STATS = """() => ({
  page: document.documentElement.scrollWidth,
  spilled: [...document.querySelectorAll(".stat")].filter((stat) => {
    const card = stat.getBoundingClientRect();
    return [...stat.querySelectorAll(".value")].some((value) => {
      const range = document.createRange();
      range.selectNodeContents(value);
      const text = range.getBoundingClientRect();
      return text.right > card.right + 0.5;
    });
  }).map((stat) => stat.textContent.trim().replace(/\\s+/g, " ")),
})"""


@pytest.mark.django_db(transaction=True)
def test_large_amounts_stay_inside_their_cards_on_a_phone(live_server, browser):
    """A class funded in hundreds of billions: on a phone the collateral (the most the position
    can lose), the free balance and the equity wrap inside their cards, instead of running into
    the next card and off the screen, where the end of the number could not be read."""
    from accounts.services import account_adjust

    classroom = make_classroom(name="Big money class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "max")
    account_adjust(account_id=account.pk, amount=Decimal("900000000000000"), reason="big class")
    position = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="100000000", leverage=10
    ).position
    assert position is not None
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, live_server.url, "max")
        for path in (f"/accounts/{account.pk}/", f"/positions/{position.pk}/"):
            page.goto(f"{live_server.url}{path}")
            page.wait_for_selector(".stat")
            assert page.evaluate(SPILLED_STATS) == {"page": PHONE["width"], "spilled": []}, path
    finally:
        context.close()
