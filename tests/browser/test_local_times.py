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
