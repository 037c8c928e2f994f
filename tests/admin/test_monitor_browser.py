"""A browser watches the live monitor while ``manage.py price_shock`` crashes the market.

Real processes: Celery worker with beat (the engine ticks), the management command in its
own process, Django's live server, and Debian's Chromium through Playwright.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from liquidation.models import LiquidationEvent, PriceFeed
from positions.services import position_open
from tests.admin.conftest import make_instructor
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import celery_worker, flush_broker, process_env, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def restore_instructors_group() -> None:
    """Transactional tests flush the tables; put back what the data migration created."""
    if Group.objects.filter(name="Instructors").exists():
        return
    import importlib

    from django.apps import apps

    migration = importlib.import_module("liquidation.migrations.0003_instructors_group")
    migration.create_group(apps, None)


@pytest.mark.browser
@pytest.mark.engine
@pytest.mark.django_db(transaction=True)
def test_monitor_shows_liquidations_as_the_price_shock_lands(live_server, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's Chromium")
    restore_instructors_group()
    teacher = make_instructor("teacher")
    classroom = make_classroom(
        instructor=teacher, name="Crash day", max_leverage=100,
        insurance_fund_seed=Decimal("5000"),
    )  # fmt: skip
    btc = make_instrument(classroom, symbol="CRASHUSDT")
    # A manual feed holds the mark still until the shock moves it.
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    doomed = []
    for name in ("ada", "bob", "cyd"):
        account = make_student(classroom, username=name)
        doomed.append(
            position_open(
                account_id=account.pk,
                instrument_id=btc.pk,
                side="long",
                quantity="0.1",
                leverage=50,
            )
        )
    survivor = make_student(classroom, username="dee")
    position_open(
        account_id=survivor.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=2
    )

    client = Client()
    client.force_login(teacher)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    url = live_server.url + reverse("admin:accounts_classroom_monitor", args=[classroom.pk])

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import expect, sync_playwright

    flush_broker()
    with celery_worker(beat=True, env={"TICK_SECONDS": "0.5"}) as worker, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context()
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": session,
                  "domain": urlparse(live_server.url).hostname, "path": "/"}]
            )  # fmt: skip
            page = context.new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            page.goto(url)
            navigations: list[str] = []
            page.on(
                "framenavigated",
                lambda frame: navigations.append(frame.url) if frame == page.main_frame else None,
            )
            expect(page.locator("#monitor-positions")).to_contain_text("ada")
            expect(page.locator("#monitor-liquidations")).to_contain_text("No liquidations yet")
            # The engine is ticking: the heartbeat shows up without a reload.
            expect(page.locator("#monitor-heartbeat")).to_contain_text("s ago", timeout=30_000)

            shock = subprocess.run(
                [sys.executable, "manage.py", "price_shock", "CRASHUSDT", "-10", "--over", "2"],
                cwd=settings.BASE_DIR, env=process_env(), capture_output=True, text=True,
                timeout=60,
            )  # fmt: skip
            assert shock.returncode == 0, shock.stderr

            rows = page.locator("#monitor-liquidations tr.liquidation")
            expect(rows).to_have_count(3, timeout=45_000)
            for name in ("ada", "bob", "cyd"):
                expect(page.locator("#monitor-liquidations")).to_contain_text(name)
            expect(page.locator("#monitor-liquidation-count")).to_have_text("3")
            expect(page.locator("#monitor-positions")).not_to_contain_text("ada")
            expect(page.locator("#monitor-positions")).to_contain_text("dee")
            assert navigations == [], "the page reloaded instead of refreshing its panel"
            shots = Path(settings.BASE_DIR) / "var" / "screenshots"
            shots.mkdir(parents=True, exist_ok=True)
            page.set_viewport_size({"width": 1600, "height": 1000})
            page.screenshot(path=str(shots / "admin-live-monitor.png"), full_page=True)
            assert not [m for m in console if "Content Security Policy" in m or "Refused" in m]
        finally:
            browser.close()
        assert "Traceback" not in worker.output()

    wait_until(
        lambda: LiquidationEvent.objects.filter(classroom=classroom).count() == 3,
        message="three liquidations recorded",
    )
    assert_ledger_invariants()
