"""A student's journey in a real browser, against a live server and a real Celery worker with
beat: sign up with the join code, open a 20x long after reading the preview, and watch the
instructor's -30% price shock liquidate it while the rest of the account stays untouched."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

from accounts.models import TradingAccount
from liquidation.models import PriceFeed
from positions.models import Position
from tests.browser.conftest import csp_violations
from tests.factories import make_classroom, make_instrument
from tests.processes import BASE_DIR, flush_broker, process_env, start_worker

pytestmark = [pytest.mark.browser, pytest.mark.engine]

PASSWORD = "a-long-passphrase-42"


def _shock(symbol: str, percent: str, classroom_id: int) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "price_shock",
            symbol,
            percent,
            "--classroom",
            str(classroom_id),
        ],
        cwd=BASE_DIR,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.django_db(transaction=True)
def test_a_price_shock_liquidates_only_the_collateral(live_server, browser, screenshots):
    from playwright.sync_api import expect

    classroom = make_classroom(name="Futures Lab")
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    flush_broker()
    worker = start_worker(beat=True, env={"TICK_SECONDS": "0.5"}, name="pages-engine")
    console: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda message: console.append(message.text))
        page.set_default_timeout(15_000)

        # Sign up with the join code.
        page.goto(f"{live_server.url}/signup/")
        page.fill("#id_username", "dana")
        page.fill("#id_password1", PASSWORD)
        page.fill("#id_password2", PASSWORD)
        page.fill("#id_join_code", classroom.join_code)
        page.click("button[type=submit]")
        expect(page.get_by_test_id("free-balance")).to_have_text("10,000.00")
        account = TradingAccount.objects.get(user__username="dana")

        # The trade ticket: a 20x long of 0.5 BTC; the preview shows LP and max loss.
        page.click("text=New trade")
        page.check("input[name=side][value=long]")
        page.fill("#id_quantity", "0.5")
        page.eval_on_selector(
            "#id_leverage",
            "el => { el.value = '20'; el.dispatchEvent(new Event('input', {bubbles: true})); }",
        )
        expect(page.locator("#leverage-value")).to_have_text("20")
        expect(page.get_by_test_id("preview-lp")).to_have_text("57,229.0")
        expect(page.get_by_test_id("preview-max-loss")).to_have_text("1,500.00")
        assert "Maximum loss = the collateral (1,500.00)" in page.inner_text("#preview")
        page.screenshot(path=str(screenshots / "trade-ticket.png"), full_page=True)

        page.click("button.primary")
        expect(page.get_by_test_id("position-status")).to_contain_text("Open")
        position = Position.objects.get(account=account)
        assert position.leverage == 20 and position.collateral.amount == Decimal(1500)
        expect(page.locator("#mark-chart[data-ready=true]")).to_have_count(1)
        free_balance = TradingAccount.objects.get(pk=account.pk).balance
        assert free_balance == Decimal("8485")  # 10,000 - 1,500 collateral - 15 fee
        page.screenshot(path=str(screenshots / "position-open.png"), full_page=True)
        page.goto(f"{live_server.url}/accounts/{account.pk}/")
        expect(page.get_by_test_id("equity")).to_have_text("9,985.00")
        page.screenshot(path=str(screenshots / "dashboard.png"), full_page=True)
        # Every page fits a phone's width (wide tables scroll inside their own box).
        page.set_viewport_size({"width": 390, "height": 844})
        for path in (f"/accounts/{account.pk}/", f"/accounts/{account.pk}/trade/",
                     f"/positions/{position.pk}/", f"/accounts/{account.pk}/history/"):  # fmt: skip
            page.goto(f"{live_server.url}{path}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        page.set_viewport_size({"width": 1280, "height": 900})
        page.goto(f"{live_server.url}/positions/{position.pk}/")

        assert csp_violations(console) == []

        # The instructor shocks the market by -30%; the engine liquidates the position. The
        # wait is generous: on a loaded machine the worker's next tick can be late, and this
        # test is about what the page shows, not how soon.
        _shock("BTCUSDT", "-30", classroom.pk)
        expect(page.get_by_test_id("position-status")).to_contain_text("Liquidated", timeout=60_000)
        expect(page.get_by_test_id("loss")).to_have_text("-1,500.00")
        expect(page.locator("#position-actions form")).to_have_count(0)  # no reload needed
        expect(page.get_by_test_id("free-balance")).to_have_text(f"{free_balance:,.2f}")
        cross = page.get_by_test_id("cross-margin")
        expect(cross).to_contain_text("Cross margin (whole account as collateral)")
        expect(page.get_by_test_id("cross-survived")).to_have_text(re.compile(r"^(Yes|No)"))
        expect(page.get_by_test_id("isolated-loss")).to_have_text("1,500.00")
        expect(page.get_by_test_id("free-balance-after")).to_have_text(f"{free_balance:,.2f}")
        # The chart's next refresh draws the liquidation marker.
        expect(page.locator("#mark-chart[data-status=liquidated]")).to_have_count(1)
        page.screenshot(path=str(screenshots / "position.png"), full_page=True)

        assert TradingAccount.objects.get(pk=account.pk).balance == free_balance
        position.refresh_from_db()
        assert position.status == Position.Status.LIQUIDATED

        # The dashboard tells the same lesson; on a phone it fits the width.
        page.goto(f"{live_server.url}/accounts/{account.pk}/")
        expect(page.get_by_test_id("lesson")).to_be_visible()
        page.screenshot(path=str(screenshots / "dashboard-liquidated.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        expect(page.get_by_test_id("lesson")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(screenshots / "dashboard-phone.png"), full_page=True)
        assert csp_violations(console) == []
    finally:
        worker.stop()
