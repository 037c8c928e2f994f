"""The live monitor on an instructor's laptop (1280 px wide): every table shows all its columns,
so an answer to a margin call is read whole, not cut off at the edge of its section."""

from __future__ import annotations

from decimal import Decimal

import pytest

from liquidation.models import MarginCall
from positions.services import position_open
from tests.admin.conftest import make_instructor
from tests.admin.test_monitor_browser import restore_instructors_group
from tests.admin.test_monitor_phone import monitor_page
from tests.browser.conftest import browser  # noqa: F401  (the Chromium fixture)
from tests.factories import make_classroom, make_instrument, make_student

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1280, "height": 800}

CUT_OFF = """() => [...document.querySelectorAll(".monitor-grid section")]
  .filter((section) => section.scrollWidth > section.clientWidth)
  .map((section) => section.id)"""


@pytest.mark.django_db(transaction=True)
def test_on_a_laptop_no_table_of_the_monitor_is_cut_off(live_server, browser):  # noqa: F811
    restore_instructors_group()
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, name="Laptop class", max_leverage=100)
    btc = make_instrument(classroom, symbol="BTCUSDT")
    account = make_student(classroom, username="ada")
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=50
    )
    MarginCall.objects.create(
        position=position,
        classroom=classroom,
        mark_price=Decimal("59000"),
        margin_ratio=Decimal("0.85"),
        outcome=MarginCall.Outcome.REDUCED,
    )
    with monitor_page(browser, live_server, classroom, viewport=LAPTOP) as page:
        calls = page.locator("#monitor-margin-calls")
        calls.get_by_text("Position reduced or closed").wait_for()
        assert page.evaluate(CUT_OFF) == []
        answer = calls.get_by_text("Position reduced or closed").bounding_box()
        box = page.locator("#monitor-margin-calls-box").bounding_box()
        assert answer is not None and box is not None
        assert answer["x"] + answer["width"] <= box["x"] + box["width"]
