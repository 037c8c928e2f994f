"""The live monitor on a phone (390 px wide): its tables scroll inside their sections, the
page itself never becomes wider than the screen, and a section stays scrolled when the panel
refreshes itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from accounts.models import Classroom
from positions.services import position_open
from tests.admin.conftest import make_instructor
from tests.admin.test_monitor_browser import restore_instructors_group
from tests.browser.conftest import browser  # noqa: F401  (the Chromium fixture)
from tests.factories import make_classroom, make_instrument, make_student

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}

SECTIONS = """() => [...document.querySelectorAll(".monitor-grid section")].map((section) => {
  const table = section.querySelector("table");
  section.scrollLeft = 80;
  const scrolled = section.scrollLeft;
  section.scrollLeft = 0;
  return {
    id: table.id,
    section: section.getBoundingClientRect().right,
    table: table.getBoundingClientRect().width,
    scrolled,
  };
})"""


@contextmanager
def monitor_page(
    chromium: Any, live_server: Any, classroom: Classroom, **context_options: Any
) -> Iterator[Any]:
    """The classroom's monitor, opened by its instructor in a browser context of its own."""
    client = Client()
    client.force_login(classroom.instructor)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    url = live_server.url + reverse("admin:accounts_classroom_monitor", args=[classroom.pk])
    context = chromium.new_context(**context_options)
    try:
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": session,
              "domain": urlparse(live_server.url).hostname, "path": "/"}]
        )  # fmt: skip
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(url)
        yield page
    finally:
        context.close()


@pytest.mark.django_db(transaction=True)
def test_the_monitor_fits_a_phone_and_its_tables_stay_scrolled(live_server, browser):  # noqa: F811
    restore_instructors_group()
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, name="Phone class", max_leverage=100)
    btc = make_instrument(classroom, symbol="BTCUSDT")
    for name, side in (("ada", "long"), ("bob", "short")):
        account = make_student(classroom, username=name)
        position_open(
            account_id=account.pk, instrument_id=btc.pk, side=side, quantity="0.1", leverage=20
        )
    with monitor_page(
        browser, live_server, classroom, viewport=PHONE, is_mobile=True, has_touch=True
    ) as page:
        page.wait_for_selector("#monitor-positions")
        sections = page.evaluate(SECTIONS)
        wide = [s for s in sections if s["table"] > PHONE["width"]]
        assert wide, sections  # the positions table, at least, is wider than a phone
        for s in sections:
            assert s["section"] <= PHONE["width"], s
        for s in wide:
            assert s["scrolled"] > 0, s
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        # The summary tiles sit two a row, so the positions start on the first screen.
        tiles = page.locator(".monitor-summary .tile")
        first, second = tiles.nth(0).bounding_box(), tiles.nth(1).bounding_box()
        assert first is not None and second is not None
        assert second["y"] == first["y"] and second["x"] > first["x"]
        table = page.locator("#monitor-positions").bounding_box()
        assert table is not None and table["y"] < PHONE["height"]
        # The panel is swapped in again every two seconds: the positions stay where the
        # instructor scrolled them, or the liquidation prices could never be read on a phone.
        page.evaluate(
            "() => { const box = document.getElementById('monitor-positions-box');"
            " box.scrollLeft = 120; box.dataset.before = 'swap'; }"
        )
        page.wait_for_function(
            "() => { const box = document.getElementById('monitor-positions-box');"
            " return box && !box.dataset.before; }"
        )
        assert page.evaluate("document.getElementById('monitor-positions-box').scrollLeft") == 120


@pytest.mark.django_db(transaction=True)
def test_the_monitor_shows_times_in_the_instructors_time_zone(live_server, browser):  # noqa: F811
    """As the students' pages do: a liquidation at 09:48 on a student's history is 09:48 on
    the monitor too, not the server's UTC."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    restore_instructors_group()
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, name="Far away class")
    # Half an hour off UTC, so the minutes themselves differ.
    with monitor_page(browser, live_server, classroom, timezone_id="Asia/Kolkata") as page:
        updated = page.locator("#monitor-updated time")
        page.wait_for_function(
            "() => !document.querySelector('#monitor-updated time').textContent.includes('UTC')"
        )
        stamp = datetime.fromisoformat(updated.get_attribute("datetime") or "")
        local = stamp.astimezone(ZoneInfo("Asia/Kolkata"))
        assert f"{local.minute:02d}:{local.second:02d}" in updated.inner_text()
        assert f"{stamp.minute:02d}:{stamp.second:02d}" not in updated.inner_text()
