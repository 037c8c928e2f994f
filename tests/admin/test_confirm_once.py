"""A confirmation page acts once: sent twice (a double click, a resent request), an action
that moves money moves it once, and the second sending says so."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection, connections, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import Classroom, ClassroomPocket, LedgerTransaction, TradingAccount
from liquidation.instructor import confirmation_expired, confirmation_token
from liquidation.models import ConfirmedAction, Scenario
from liquidation.tasks import history_prune
from positions.models import Instrument
from tests.admin.conftest import make_instructor
from tests.admin.forms import admin_form_data
from tests.factories import make_classroom, make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import wait_until, waiting_on_locks

ACCOUNTS = reverse("admin:accounts_tradingaccount_changelist")
CLASSROOMS = reverse("admin:accounts_classroom_changelist")
INSTRUMENTS = reverse("admin:positions_instrument_changelist")
Kind = LedgerTransaction.Kind
SENT_TWICE = "This confirmation was sent twice"


def confirmation(client, changelist, action, objects, **data) -> dict:
    """Ask for the action and fill in its confirmation page as the instructor would."""
    selected = [o.pk for o in objects]
    page = client.post(changelist, {"action": action, "_selected_action": selected})
    assert page.status_code == 200
    hidden = dict(re.findall(rb'type="hidden" name="(confirm\w*)" value="([^"]*)"', page.content))
    fields = {name.decode(): value.decode() for name, value in hidden.items()}
    return {"action": action, "_selected_action": selected, **fields, **data}


def send_twice_at_once(user, url: str, data: dict, hold: Callable[[], None]) -> list:
    """Post ``data`` to ``url`` as ``user`` from two threads at once, both sendings queued
    behind a lock that ``hold`` takes in another transaction until both wait on it: the
    second arrives while the first is still acting. The two responses, in finishing order."""
    held, release = threading.Event(), threading.Event()
    responses: list = []
    failures: list[BaseException] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                hold()
                held.set()
                assert release.wait(timeout=60)
        finally:
            connections.close_all()

    def send() -> None:
        try:
            sender = Client()
            sender.force_login(user)
            responses.append(sender.post(url, data))
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    holding = threading.Thread(target=holder)
    holding.start()
    assert held.wait(timeout=30)
    sendings = [threading.Thread(target=send) for _ in range(2)]
    for thread in sendings:
        thread.start()
    wait_until(lambda: waiting_on_locks() >= 2, timeout=30, message="both sendings queueing")
    release.set()
    for thread in [holding, *sendings]:
        thread.join(timeout=60)
    assert not failures, failures
    return responses


def messages_of(response) -> list[str]:
    return [str(m) for m in response.wsgi_request._messages]


def kinds_since(before: int) -> list[str]:
    return list(LedgerTransaction.objects.filter(pk__gt=before).values_list("kind", flat=True))


def last_txn_id() -> int:
    return LedgerTransaction.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_a_grant_confirmed_twice_moves_the_money_once(world, alpha_client):
    accounts = list(TradingAccount.objects.filter(classroom=world.alpha_class).order_by("pk"))
    balances = [a.balance for a in accounts]
    before = last_txn_id()
    sent = confirmation(
        alpha_client, ACCOUNTS, "grant_or_deduct", accounts,
        direction="grant", amount="250", reason="Won the quiz",
    )  # fmt: skip
    first = alpha_client.post(ACCOUNTS, sent)
    again = alpha_client.post(ACCOUNTS, sent)

    assert first.status_code == again.status_code == 302
    assert kinds_since(before) == [Kind.GRANT, Kind.GRANT]  # one per account, once
    for account, balance in zip(accounts, balances, strict=True):
        account.refresh_from_db()
        assert account.balance == balance + 250
    assert any(SENT_TWICE in m for m in messages_of(again))
    assert LogEntry.objects.filter(change_message__startswith="Granted").count() == 2
    assert_ledger_invariants()


def test_an_insurance_top_up_confirmed_twice_moves_the_money_once(world, alpha_client):
    classroom = world.alpha_class
    fund = ClassroomPocket.objects.get(classroom=classroom, kind="insurance")
    before = last_txn_id()
    sent = confirmation(
        alpha_client, CLASSROOMS, "adjust_insurance_fund", [classroom],
        direction="top_up", amount="500", reason="Crash lesson",
    )  # fmt: skip
    alpha_client.post(CLASSROOMS, sent)
    again = alpha_client.post(CLASSROOMS, sent)

    assert kinds_since(before) == [Kind.INSURANCE_ADJUST]
    assert ClassroomPocket.objects.get(pk=fund.pk).balance == fund.balance + 500
    assert any(SENT_TWICE in m for m in messages_of(again))
    assert_ledger_invariants()


def test_a_move_confirmed_twice_starts_one_scenario(world, alpha_client):
    instrument = Instrument.objects.get(classroom=world.alpha_class)
    sent = confirmation(
        alpha_client, INSTRUMENTS, "start_scenario", [instrument],
        kind="move", percent="-30", duration_seconds="0",
    )  # fmt: skip
    alpha_client.post(INSTRUMENTS, sent)
    again = alpha_client.post(INSTRUMENTS, sent)

    started = Scenario.objects.filter(instrument=instrument).exclude(status="finished")
    assert list(started.values_list("status", "percent")) == [("active", Decimal(-30))]
    assert any(SENT_TWICE in m for m in messages_of(again))


def test_a_refused_confirmation_can_be_sent_again_once_corrected(world, alpha_client):
    """A refusal claims nothing: the same page, corrected, still acts."""
    poor = TradingAccount.objects.filter(classroom=world.alpha_class).order_by("balance")[0]
    before = last_txn_id()
    sent = confirmation(
        alpha_client, ACCOUNTS, "grant_or_deduct", [poor],
        direction="deduct", amount=str(poor.balance + 1), reason="Penalty",
    )  # fmt: skip
    refused = alpha_client.post(ACCOUNTS, sent)
    assert b"Nothing was changed" in refused.content
    corrected = alpha_client.post(ACCOUNTS, {**sent, "amount": "1"})
    assert corrected.status_code == 302
    assert kinds_since(before) == [Kind.DEDUCT]
    assert_ledger_invariants()


@pytest.mark.django_db(transaction=True)
def test_a_double_click_sending_both_at_once_grants_once():
    """The second sending arrives while the first is still moving the money: it waits for
    the first's claim and then acts on nothing."""
    alpha = make_instructor("alpha")
    classroom = make_classroom(instructor=alpha, name="Double click")
    account = make_student(classroom)
    client = Client()
    client.force_login(alpha)
    sent = confirmation(
        client, ACCOUNTS, "grant_or_deduct", [account],
        direction="grant", amount="100", reason="Quiz",
    )  # fmt: skip
    before = last_txn_id()

    def hold_house() -> None:
        ClassroomPocket.objects.select_for_update().get(classroom=classroom, kind="house")

    responses = send_twice_at_once(alpha, ACCOUNTS, sent, hold_house)
    assert [r.status_code for r in responses] == [302, 302]
    assert kinds_since(before) == [Kind.GRANT]
    account.refresh_from_db()
    assert account.balance == classroom.starting_balance + 100
    assert_ledger_invariants()


CLASSROOM_ADD = reverse("admin:accounts_classroom_add")
CLASS_SENT_TWICE = "This form was sent twice: the classroom was created the first time only"


def classroom_add_form(client, name: str) -> dict:
    """The "add classroom" page filled in as the instructor would, with its hidden token."""
    page = client.get(CLASSROOM_ADD)
    assert page.status_code == 200
    data = admin_form_data(page)
    data.update(name=name, starting_balance="10000", insurance_fund_seed="500", _save="Save")
    return data


def test_the_add_classroom_form_sent_twice_creates_one_classroom(world, alpha_client):
    before = last_txn_id()
    sent = classroom_add_form(alpha_client, "Derivatives 101")
    first = alpha_client.post(CLASSROOM_ADD, sent)
    again = alpha_client.post(CLASSROOM_ADD, sent)

    created = Classroom.objects.get(name="Derivatives 101")
    assert created.instructor == world.alpha
    assert first.status_code == again.status_code == 302
    assert again["Location"] == reverse("admin:accounts_classroom_change", args=[created.pk])
    assert any(CLASS_SENT_TWICE in m for m in messages_of(again))
    assert not any(CLASS_SENT_TWICE in m for m in messages_of(first))
    assert kinds_since(before) == [Kind.INSURANCE_SEED]
    assert ClassroomPocket.objects.get(classroom=created, kind="insurance").balance == 500
    assert LogEntry.objects.filter(object_id=str(created.pk), action_flag=1).count() == 1
    assert_ledger_invariants()
    assert re.fullmatch(r"[0-9a-f]{32}", sent["creation_token"])
    # A new page has a new token: the instructor can still create a second class on purpose.
    another = alpha_client.post(CLASSROOM_ADD, classroom_add_form(alpha_client, "Derivatives 101"))
    assert another.status_code == 302
    assert Classroom.objects.filter(name="Derivatives 101").count() == 2


def test_a_refused_add_classroom_form_can_be_sent_again_once_corrected(world, alpha_client):
    """A form error claims nothing: the same page, corrected, still creates the class."""
    sent = classroom_add_form(alpha_client, "Options 201")
    refused = alpha_client.post(CLASSROOM_ADD, {**sent, "starting_balance": "-5"})
    assert refused.status_code == 200
    assert not Classroom.objects.filter(name="Options 201").exists()
    corrected = alpha_client.post(CLASSROOM_ADD, sent)
    assert corrected.status_code == 302
    assert not any(CLASS_SENT_TWICE in m for m in messages_of(corrected))
    assert Classroom.objects.filter(name="Options 201").count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_add_classroom_form_sent_twice_at_once_creates_one_classroom():
    """The second sending arrives while the first is still creating the class: it waits for
    the first's claim of the token, then goes to the class the first one made."""
    alpha = make_instructor("alpha")
    client = Client()
    client.force_login(alpha)
    sent = classroom_add_form(client, "Double save")
    before = last_txn_id()

    def hold_tokens() -> None:
        # Both sendings queue at their claim of the token until this lets them go.
        with connection.cursor() as cursor:
            cursor.execute(
                f"LOCK TABLE {ConfirmedAction._meta.db_table} IN SHARE ROW EXCLUSIVE MODE"
            )

    responses = send_twice_at_once(alpha, CLASSROOM_ADD, sent, hold_tokens)
    answers = [(r.status_code, r["Location"], messages_of(r)) for r in responses]
    created = Classroom.objects.get(name="Double save")
    assert sorted(status for status, _, _ in answers) == [302, 302]
    twice = [
        location for _, location, notes in answers if any(CLASS_SENT_TWICE in n for n in notes)
    ]
    assert twice == [reverse("admin:accounts_classroom_change", args=[created.pk])]
    assert kinds_since(before) == [Kind.INSURANCE_SEED]
    assert_ledger_invariants()


EXPIRED = "This confirmation page has expired"
CLASS_FORM_EXPIRED = "This form has expired"


def test_housekeeping_forgets_the_claims_of_pages_too_old_to_act(db):
    now = timezone.now()
    ages = {"old": timedelta(hours=14), "a day": timedelta(days=1), "recent": timedelta(hours=1)}
    # Kept a little past the twelve hours a page is good for, for web servers' clocks.
    ages["just past the page"] = timedelta(hours=12, minutes=30)
    for name, age in ages.items():
        ConfirmedAction.objects.create(token=name, created_at=now - age)

    history_prune()

    kept = set(ConfirmedAction.objects.values_list("token", flat=True))
    assert kept == {"recent", "just past the page"}
    # So a page is refused before its claim can be forgotten: one left open for a day is.
    assert confirmation_expired(token=confirmation_token(now - timedelta(days=1)), now=now)
    assert not confirmation_expired(token=confirmation_token(now - timedelta(hours=11)), now=now)


def wait_past(seconds: float, since: float) -> None:
    # Tokens carry their time of issue in whole seconds: a second more makes it past for sure.
    time.sleep(max(0.0, since + seconds + 1.2 - time.monotonic()))


def test_a_confirmation_sent_again_after_its_claim_was_forgotten_acts_once(
    world, alpha_client, settings
):
    settings.CONFIRMATION_MAX_AGE_SECONDS = 1
    accounts = list(TradingAccount.objects.filter(classroom=world.alpha_class).order_by("pk"))
    balances = [a.balance for a in accounts]
    before = last_txn_id()
    opened = time.monotonic()
    sent = confirmation(
        alpha_client, ACCOUNTS, "grant_or_deduct", accounts,
        direction="grant", amount="250", reason="Won the quiz",
    )  # fmt: skip
    first = alpha_client.post(ACCOUNTS, sent)
    assert first.status_code == 302
    wait_past(settings.CONFIRMATION_MAX_AGE_SECONDS * 13 / 12, since=opened)
    history_prune()
    assert not ConfirmedAction.objects.exists()

    again = alpha_client.post(ACCOUNTS, sent)

    assert again.status_code == 302
    assert any(EXPIRED in m for m in messages_of(again))
    assert kinds_since(before) == [Kind.GRANT, Kind.GRANT]  # one per account, once
    for account, balance in zip(accounts, balances, strict=True):
        account.refresh_from_db()
        assert account.balance == balance + 250
    assert not ConfirmedAction.objects.exists()
    assert_ledger_invariants()


def test_an_add_classroom_form_left_open_too_long_creates_nothing(world, alpha_client, settings):
    settings.CONFIRMATION_MAX_AGE_SECONDS = 1
    before = last_txn_id()
    opened = time.monotonic()
    sent = classroom_add_form(alpha_client, "Left open")
    wait_past(settings.CONFIRMATION_MAX_AGE_SECONDS, since=opened)

    response = alpha_client.post(CLASSROOM_ADD, sent)

    assert response.status_code == 302
    assert response["Location"] == CLASSROOMS
    assert any(CLASS_FORM_EXPIRED in m for m in messages_of(response))
    assert not Classroom.objects.filter(name="Left open").exists()
    assert kinds_since(before) == []
    assert not ConfirmedAction.objects.exists()
