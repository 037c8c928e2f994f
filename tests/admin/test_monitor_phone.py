"""The live monitor on a phone (390 px wide): its tables scroll inside their sections, the
page itself never becomes wider than the screen, and the panel's refreshes leave each section's
scroll, the page's scroll and the keyboard's focus where they were."""

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

# Counts the panel's swaps: a response alone does not say its content is in the page yet.
COUNT_SWAPS = """() => {
  window.monitorSwaps = 0;
  document.addEventListener("htmx:afterSettle", () => { window.monitorSwaps += 1; });
}"""

# True once the keyboard's smooth scroll has moved the section and come to rest.
SCROLLED_AND_STILL = """() => {
  const left = document.getElementById("monitor-imbalance-box").scrollLeft;
  const still = left > 0 && left === window.lastScrollLeft;
  window.lastScrollLeft = left;
  return still;
}"""

WHERE = """() => ({
  positions: document.getElementById("monitor-positions-box").scrollLeft,
  imbalance: document.getElementById("monitor-imbalance-box").scrollLeft,
  focused: document.activeElement.id,
  page: window.scrollY,
})"""


def phone_class() -> Classroom:
    """A classroom with a long and a short open, so the positions table is wider than a phone."""
    restore_instructors_group()
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, name="Phone class", max_leverage=100)
    btc = make_instrument(classroom, symbol="BTCUSDT")
    for name, side in (("ada", "long"), ("bob", "short")):
        account = make_student(classroom, username=name)
        position_open(
            account_id=account.pk, instrument_id=btc.pk, side=side, quantity="0.1", leverage=20
        )
    return classroom


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
    classroom = phone_class()
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


@pytest.mark.django_db(transaction=True)
def test_refreshes_keep_the_sections_scroll_the_page_scroll_and_the_focus(live_server, browser):  # noqa: F811
    """An instructor on a phone scrolls one table with a finger, moves to another with the
    keyboard and pages down to it: the panel swapped in every two seconds leaves all of that
    where it was, or the right-hand columns (liquidation price, distance) jump out of reach."""
    classroom = phone_class()
    with monitor_page(
        browser, live_server, classroom, viewport=PHONE, is_mobile=True, has_touch=True
    ) as page:
        page.wait_for_selector("#monitor-positions")
        page.evaluate(COUNT_SWAPS)
        # Scroll between two refreshes, so none lands in the middle of the keyboard's
        # smooth scroll.
        page.wait_for_function("() => window.monitorSwaps >= 1")
        page.evaluate("document.getElementById('monitor-positions-box').scrollLeft = 120")
        page.focus("#monitor-imbalance-box")
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(SCROLLED_AND_STILL, polling=100)
        page.evaluate("window.scrollTo(0, 300)")
        before = page.evaluate(WHERE)
        assert before["imbalance"] > 0 and before["page"] == 300, before
        assert before["focused"] == "monitor-imbalance-box", before

        swaps = page.evaluate("window.monitorSwaps")
        for refresh in (1, 2):
            with page.expect_response(
                lambda r: r.url == page.url and r.request.headers.get("hx-request") == "true"
            ) as panel:
                pass
            assert panel.value.ok
            page.wait_for_function(f"() => window.monitorSwaps >= {swaps + refresh}")
            assert page.evaluate(WHERE) == before
