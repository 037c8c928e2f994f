"""The position page's banner for a liquidation under way is told from the margin warning by more
than the colour of its edge."""

from __future__ import annotations

from decimal import Decimal

import pytest

from positions.models import Instrument
from positions.services import position_open
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LOOK = """(banner) => {
  const style = getComputedStyle(banner);
  return [style.backgroundImage, style.borderTopColor];
}"""


def test_being_liquidated_is_tinted_red_where_the_warning_is_not(live_server, browser):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Banner class", max_leverage=20)
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "bea")
    # Long 0.5 at 60,000, 20x: the liquidation price is 57,229.0.
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    page = browser.new_page()
    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        sign_in(page, live_server.url, "bea")
        banner = page.get_by_test_id("position-status")
        looks = {}
        for mark, words in (
            ("57260", "margin ratio at warning level"),
            ("57200", "Being liquidated"),
        ):
            Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal(mark))
            page.goto(f"{live_server.url}/positions/{position.pk}/")
            expect(banner).to_contain_text(words)
            looks[words] = banner.evaluate(LOOK)
        warning, liquidating = looks.values()
        assert warning[0] == "none" and "rgba(246, 70, 93" in liquidating[0]
        assert liquidating[1] == "rgb(248, 103, 122)" != warning[1]  # red all round
    finally:
        page.close()
    assert csp_violations(console) == []
