"""A double click on "Place order" opens one position: without the page's script, the
ticket's one-time client_order_id makes the second submit find the first order; with it, the
button also waits for the first submit's answer."""

from __future__ import annotations

import re

import pytest

from positions.models import Order, Position
from tests.browser.conftest import csp_violations, make_learner, sign_in
from tests.factories import make_classroom, make_instrument
from tests.invariants import assert_ledger_invariants

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("script", [True, False], ids=["with-script", "without-script"])
def test_a_double_click_on_place_order_opens_one_position(live_server, browser, script):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Double click class", max_leverage=20)
    make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "dana")
    ticket_url = f"{live_server.url}/accounts/{account.pk}/trade/"
    context = browser.new_context(java_script_enabled=script)
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    submits: list[str] = []
    page.on(
        "request",
        lambda request: (
            submits.append(request.url)
            if request.method == "POST" and request.url == ticket_url
            else None
        ),
    )
    try:
        sign_in(page, live_server.url, "dana")
        page.goto(ticket_url)
        page.fill("#id_quantity", "0.01")
        if script:  # the preview has answered: the ticket is as the student reads it
            expect(page.get_by_test_id("preview-lp")).to_be_visible()
        # A slow network: the first submit is still on its way when the second click comes.
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 1500, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        button = page.get_by_role("button", name="Place order")
        button.scroll_into_view_if_needed()
        box = button.bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        # A student's double click: two clicks a tenth of a second apart.
        page.mouse.click(x, y)
        page.wait_for_timeout(100)
        page.mouse.click(x, y, click_count=2)
        # Polled rather than waited for: the first submit's navigation is aborted by the
        # second, which a wait for the navigation would take for a failure.
        expect(page).to_have_url(re.compile(r"/positions/\d+/$"))
        expect(page.locator("body")).to_contain_text("Opened position #")
        # The script holds every later click back; without it the browser sends the ticket
        # again for the later clicks (two or three times, as the clicks meet its navigation).
        assert len(submits) == 1 if script else len(submits) >= 2
        positions = Position.objects.filter(account=account)
        assert positions.count() == 1
        assert Order.objects.filter(account=account).count() == 1
        assert page.url.endswith(f"/positions/{positions.get().pk}/")
        assert csp_violations(console) == []
    finally:
        context.close()
    assert_ledger_invariants()
