"""Times on the learner pages read in the learner's own time zone (the server writes UTC)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from positions.services import position_open
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument

pytestmark = pytest.mark.browser

TOKYO = "Asia/Tokyo"  # UTC+9 all year, so its clock never shows the UTC time


@pytest.mark.django_db(transaction=True)
def test_timeline_and_statement_show_the_readers_clock(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Night class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "kenji")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=10
    )
    context = browser.new_context(timezone_id=TOKYO, locale="en-GB")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        sign_in(page, live_server.url, "kenji")

        for path in (f"/positions/{position.pk}/", f"/accounts/{account.pk}/history/"):
            page.goto(f"{live_server.url}{path}")
            stamp = page.locator("time[data-local]").first
            at = datetime.fromisoformat(stamp.get_attribute("datetime") or "")
            tokyo, utc = at.astimezone(ZoneInfo(TOKYO)), at.astimezone(ZoneInfo("UTC"))
            text = stamp.inner_text()
            assert tokyo.strftime("%H:%M") in text, (path, text)
            assert utc.strftime("%H:%M") not in text and "UTC" not in text, (path, text)
            assert (stamp.get_attribute("title") or "").endswith(" UTC")
        # The timeline is swapped in again by htmx every two seconds: still local after that.
        page.goto(f"{live_server.url}/positions/{position.pk}/")
        with page.expect_response(lambda response: "/live/" in response.url):
            pass  # the next refresh of the live part
        stamp = page.locator("#position-live time[data-local]").first
        at = datetime.fromisoformat(stamp.get_attribute("datetime") or "")
        expect(stamp).to_contain_text(at.astimezone(ZoneInfo(TOKYO)).strftime("%H:%M"))
        expect(stamp).not_to_contain_text("UTC")
        assert csp_violations(console) == []
    finally:
        context.close()


@pytest.mark.django_db(transaction=True)
def test_the_dashboard_tells_when_an_order_was_refused_on_the_readers_clock(live_server, browser):
    from playwright.sync_api import expect

    from positions.models import Order
    from positions.services import order_place
    from tests.engine.helpers import set_price

    classroom = make_classroom(name="Night class")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "kenji")
    stop = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="stop",
        quantity="0.01", leverage=10, stop_price="61000",
    )  # fmt: skip
    classroom.trading_enabled = False
    classroom.save(update_fields=["trading_enabled"])
    set_price(btc, "61500")
    stop.refresh_from_db()
    assert stop.status == Order.Status.REJECTED
    refused_at = stop.updated_at
    context = browser.new_context(timezone_id=TOKYO, locale="en-GB")
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        sign_in(page, live_server.url, "kenji")
        page.goto(f"{live_server.url}/accounts/{account.pk}/")
        tokyo = refused_at.astimezone(ZoneInfo(TOKYO)).strftime("%H:%M")
        utc = refused_at.astimezone(ZoneInfo("UTC")).strftime("%H:%M")
        stamp = page.locator(f'#refused-orders li[data-order="{stop.pk}"] time[data-local]')
        expect(stamp).to_contain_text(tokyo)
        assert utc not in stamp.inner_text() and "UTC" not in stamp.inner_text()
        # The dashboard's live part is swapped in again every two seconds: still local after.
        page.evaluate(
            "() => { document.getElementById('refused-orders').dataset.before = 'swap'; }"
        )
        page.wait_for_function(
            "() => { const notice = document.getElementById('refused-orders');"
            " return notice && !notice.dataset.before; }"
        )
        expect(stamp).to_contain_text(tokyo)
        expect(stamp).not_to_contain_text("UTC")
        assert csp_violations(console) == []
    finally:
        context.close()
