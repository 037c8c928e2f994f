"""Playwright driving Debian's Chromium (Playwright cannot download its own browsers here)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.conf import settings
from django.db import connections

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from accounts.models import Classroom, TradingAccount

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"


@pytest.fixture
def browser(monkeypatch) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's Chromium")
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls
    # are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import expect, sync_playwright

    # Live parts refresh every 2 s and a loaded machine may need several refreshes to show a
    # change: an expectation waits as long as the tests' page actions (15 s) before it fails.
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()
            # ORM calls made while Playwright's loop ran got connections of their own
            # context, which the test database's teardown cannot see: close them here.
            connections.close_all()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def csp_violations(messages: list[str]) -> list[str]:
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


LEARNER_PASSWORD = "a-long-passphrase-42"


def make_learner(classroom: Classroom, username: str) -> TradingAccount:
    """A student of ``classroom`` who can sign in with ``LEARNER_PASSWORD``."""
    from tests.factories import make_student

    account = make_student(classroom, username=username)
    account.user.set_password(LEARNER_PASSWORD)
    account.user.save()
    return account


def sign_in(page: Page, url: str, username: str) -> None:
    """Sign in through the login form and wait for the dashboard."""
    page.goto(f"{url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", LEARNER_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/accounts/**")
