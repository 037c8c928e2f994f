"""Every page passes axe-core's WCAG 2.1 A and AA rules: the learner pages (signed out, signed in,
with open, closed and liquidated positions, resting orders, an order refused when it triggered, a
margin call and API keys; on a desktop and, where they turn into cards, on a phone), the API
documentation and the instructors' admin pages (the live monitor, the confirmation pages of the
actions, a stock change list and change form)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings
from django.urls import reverse

from accounts.models import TradingAccount
from api.services import api_key_create, api_key_revoke
from liquidation.models import MarginCall
from positions.models import Order, Position
from positions.services import order_place, position_close
from tests.admin.conftest import build_class, make_instructor
from tests.admin.test_monitor_browser import restore_instructors_group
from tests.browser.conftest import LEARNER_PASSWORD, csp_violations, make_learner, sign_in
from tests.engine.helpers import set_price
from tests.factories import make_classroom, make_instrument

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Path(settings.BASE_DIR) / "node_modules" / "axe-core" / "axe.min.js"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
DESK = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Django's date and time widget (AdminSplitDateTime, the classroom's trading window) writes its
# "Date:" and "Time:" as plain text beside the two inputs, not as their labels; the markup is
# Django's own.
SPLIT_DATE_TIME = "p.datetime input"

# Swagger UI draws the whole API documentation into this node; its markup is the sidecar
# package's, not Ringfence's, so the audit of /api/docs/ leaves it out.
SWAGGER_UI = "#swagger-ui"

# The violations axe finds, each with the nodes it fails on and why (a contrast's colours, say).
AUDIT = """async ([tags, exclude]) => {
  const context = exclude.length ? { exclude: exclude.map((s) => [s]) } : document;
  const result = await axe.run(context, { runOnly: { type: "tag", values: tags } });
  return result.violations.map((v) => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map((n) => {
      const why = [...n.any, ...n.all, ...n.none].map((c) => c.message).find(Boolean);
      return n.target.join(" ") + (why ? ` (${why})` : "");
    }),
  }));
}"""


def audit(page: Page, name: str, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """The page's violations, one readable line each, named after the page."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make deps` installs axe-core")
    page.wait_for_load_state("networkidle")
    # The live parts of a page are swapped in again every few seconds: a swap in the middle of
    # the audit would take its nodes away, so the page makes no more requests.
    page.evaluate(
        "() => document.addEventListener('htmx:beforeRequest', (e) => e.preventDefault())"
    )
    # The pages' CSP allows scripts from the site only, which rules out the inline script tag
    # that add_script_tag would write; page.evaluate runs through the DevTools protocol, which
    # the CSP does not govern.
    page.evaluate(AXE.read_text() + "\n;0")
    violations: list[dict[str, Any]] = page.evaluate(AUDIT, [WCAG_21_AA, list(exclude)])
    return [
        f"{name}: {v['id']} ({v['impact']}) {v['help']}: {'; '.join(v['nodes'])}"
        for v in violations
    ]


def refused(
    page: Page, url: str, path: str, button: str = "main form button[type=submit]"
) -> list[str]:
    """The violations of the page's form once it has refused an empty submit, errors shown."""
    page.goto(f"{url}{path}")
    page.click(button)
    page.wait_for_selector(".field-error:not(:empty), .form-errors")
    return audit(page, f"{path} refused")


def test_the_learner_pages_pass_the_wcag_aa_audit(live_server, browser):
    classroom = make_classroom(name="Audit class", max_leverage=100)
    btc = make_instrument(classroom, symbol="BTCUSDT", mark="60000")
    account = make_learner(classroom, "ada")
    make_learner(classroom, "bea")
    held = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.05", leverage=20,
        take_profit="70000", stop_loss="58000",
    ).position  # fmt: skip
    closed = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", quantity="0.02", leverage=5
    ).position
    doomed = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", quantity="0.1", leverage=50
    ).position
    # Liquidated at 60,956; at 61,700 a 30x short is a step away (margin ratio 82%): the engine
    # calls for margin and the dashboard marks the position at risk.
    near = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", quantity="0.01", leverage=30
    ).position
    limit = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.01", leverage=5, price="50000",
    )  # fmt: skip
    # A stop the engine refuses when it triggers (the instructor froze the account meanwhile):
    # the dashboard lists it under "Recently refused".
    stop = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="stop",
        quantity="0.01", leverage=5, stop_price="61500",
    )  # fmt: skip
    assert held and closed and doomed and near
    position_close(position_id=closed.pk)
    TradingAccount.objects.filter(pk=account.pk).update(trading_frozen=True)
    set_price(btc, "61700")
    TradingAccount.objects.filter(pk=account.pk).update(trading_frozen=False)
    doomed.refresh_from_db()
    assert doomed.status == Position.Status.LIQUIDATED
    stop.refresh_from_db()
    assert stop.status == Order.Status.REJECTED
    assert MarginCall.objects.filter(position=near).exists()
    api_key_create(user_id=account.user_id, name="momentum bot", scope="trade")
    leaked = api_key_create(user_id=account.user_id, name="leaked key").api_key
    api_key_revoke(user_id=account.user_id, api_key_id=leaked.pk)

    url = live_server.url
    dashboard = f"{url}/accounts/{account.pk}/"
    violations: list[str] = []
    console: list[str] = []
    context = browser.new_context(viewport=DESK)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda message: console.append(f"{page.url} {message.text}"))
        for path in ("/", "/login/", "/signup/"):
            page.goto(f"{url}{path}")
            violations += audit(page, path)
        violations += refused(page, url, "/signup/")
        # A refused sign-in shows its error above the form.
        page.goto(f"{url}/login/")
        page.fill("#id_username", "ada")
        page.fill("#id_password", "not the passphrase")
        page.click("button[type=submit]")
        page.wait_for_selector(".form-errors")
        violations += audit(page, "/login/ refused")

        sign_in(page, url, "ada")
        pages = [
            "/classrooms/",
            f"/accounts/{account.pk}/",
            f"/accounts/{account.pk}/trade/",
            f"/accounts/{account.pk}/history/",
            f"/accounts/{account.pk}/leaderboard/",
            f"/positions/{held.pk}/",
            f"/positions/{closed.pk}/",
            f"/positions/{doomed.pk}/",
            f"/positions/{near.pk}/",
            "/password/",
            "/password/done/",
            f"/orders/{limit.pk}/change/",
        ]
        for path in pages:
            page.goto(f"{url}{path}")
            violations += audit(page, path)
        for path in ("/classrooms/", "/password/", f"/orders/{limit.pk}/change/"):
            violations += refused(page, url, path)
        violations += refused(page, url, f"/positions/{near.pk}/", "button:has-text('Apply')")

        # The ticket refuses an order larger than the balance: its errors are on the page.
        page.goto(f"{dashboard}trade/")
        page.fill("#id_quantity", "100")
        page.click("button.primary")
        page.wait_for_selector(".has-error, .form-errors")
        violations += audit(page, "trade refused")

        # A new key is shown once, with its copy button and a terminal example.
        page.goto(f"{url}/api-keys/")
        page.fill("#id_name", "grid bot")
        page.click("button:has-text('Create key')")
        page.wait_for_selector("#new-key")
        violations += audit(page, "/api-keys/")

        page.goto(f"{url}/api/docs/")
        page.wait_for_selector(f"{SWAGGER_UI} .opblock")
        violations += audit(page, "/api/docs/", exclude=(SWAGGER_UI,))

        # On a phone positions, orders, the statement and the leaderboard are cards, and the
        # ticket's preview comes before its button.
        page.set_viewport_size(PHONE)
        for path in (
            f"/accounts/{account.pk}/",
            f"/accounts/{account.pk}/trade/",
            f"/accounts/{account.pk}/history/",
            f"/accounts/{account.pk}/leaderboard/",
            f"/positions/{near.pk}/",
            f"/positions/{doomed.pk}/",
            f"/orders/{limit.pk}/change/",
        ):
            page.goto(f"{url}{path}")
            violations += audit(page, f"{path} on a phone")
    finally:
        context.close()
    assert violations == [], "\n".join(violations)
    assert csp_violations(console) == []


def test_the_instructor_pages_pass_the_wcag_aa_audit(live_server, browser):
    restore_instructors_group()
    teacher = make_instructor("teacher")
    teacher.set_password(LEARNER_PASSWORD)
    teacher.save()
    classroom = build_class(teacher, prefix="audit", with_crash=True)
    # A long name ends the change form's breadcrumbs in a line of text beside its links.
    classroom.name = "Leveraged trading for beginners, autumn term, Thursday group B"
    classroom.save(update_fields=["name"])
    url = live_server.url
    violations: list[str] = []
    context = browser.new_context(viewport=DESK)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{url}/admin/login/")
        violations += audit(page, "admin sign-in")
        page.fill("#id_username", "teacher")
        page.fill("#id_password", LEARNER_PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{url}/admin/")
        violations += audit(page, "admin index")

        changelist = reverse("admin:accounts_classroom_changelist")
        monitor = reverse("admin:accounts_classroom_monitor", args=[classroom.pk])
        for name, path, exclude in (
            ("classroom list", changelist, ()),
            (
                "classroom form",
                reverse("admin:accounts_classroom_change", args=[classroom.pk]),
                (SPLIT_DATE_TIME,),
            ),
            ("monitor", monitor, ()),
            ("position list", reverse("admin:positions_position_changelist"), ()),
        ):
            page.goto(f"{url}{path}")
            violations += audit(page, name, exclude=exclude)

        # An action that asks first, with a form of its own.
        page.goto(f"{url}{changelist}")
        page.check(f"input[name=_selected_action][value='{classroom.pk}']")
        page.select_option("select[name=action]", "adjust_insurance_fund")
        page.click("button[name=index]")
        page.wait_for_selector(".ringfence-confirm")
        violations += audit(page, "confirmation")

        page.set_viewport_size(PHONE)
        page.goto(f"{url}{monitor}")
        violations += audit(page, "monitor on a phone")
    finally:
        context.close()
    # No look at the console here: the scripts of Django's stock change form (jQuery, for the
    # inlines) write inline styles that the CSP refuses. The learner pages show the audit itself
    # runs within the CSP.
    assert violations == [], "\n".join(violations)
