"""Each instructor action asks first, goes through a service, posts its ledger transactions
and leaves the ledger balanced; a refused action writes nothing."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.urls import reverse
from django.utils import timezone

from accounts.models import Classroom, ClassroomPocket, LedgerTransaction, TradingAccount
from positions.models import Instrument, Order, Position
from tests.factories import make_classroom, make_instrument
from tests.invariants import assert_ledger_invariants

ACCOUNTS = reverse("admin:accounts_tradingaccount_changelist")
CLASSROOMS = reverse("admin:accounts_classroom_changelist")
Kind = LedgerTransaction.Kind


def students(world) -> list[TradingAccount]:
    return list(
        TradingAccount.objects.filter(classroom=world.alpha_class).order_by("user__username")
    )


def run(client, changelist, action, objects, **data):
    return client.post(
        changelist,
        {"action": action, "_selected_action": [o.pk for o in objects], "confirm": "yes", **data},
    )


def new_transactions(before: int):
    return list(LedgerTransaction.objects.filter(pk__gt=before).prefetch_related("entries"))


def last_txn_id() -> int:
    return LedgerTransaction.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def logged(obj, text: str) -> bool:
    return LogEntry.objects.filter(
        object_id=str(obj.pk), action_flag=CHANGE, change_message__contains=text
    ).exists()


def test_every_action_first_shows_a_confirmation_page_and_does_nothing(world, alpha_client):
    accounts = students(world)
    before = last_txn_id()
    for changelist, objects, action in [
        (ACCOUNTS, accounts, "grant_or_deduct"),
        (ACCOUNTS, accounts, "reset_to_starting_balance"),
        (ACCOUNTS, accounts, "freeze_trading"),
        (ACCOUNTS, accounts, "unfreeze_trading"),
        (ACCOUNTS, accounts, "export_grades"),
        (CLASSROOMS, [world.alpha_class], "open_trading"),
        (CLASSROOMS, [world.alpha_class], "close_trading"),
        (CLASSROOMS, [world.alpha_class], "regenerate_join_code"),
        (CLASSROOMS, [world.alpha_class], "copy_instruments"),
        (CLASSROOMS, [world.alpha_class], "adjust_insurance_fund"),
        (CLASSROOMS, [world.alpha_class], "export_grades"),
    ]:
        response = alpha_client.post(
            changelist, {"action": action, "_selected_action": [o.pk for o in objects]}
        )
        assert response.status_code == 200, action
        assert b'name="confirm" value="yes"' in response.content, action
        assert response["Content-Type"].startswith("text/html"), action
    assert last_txn_id() == before
    assert not TradingAccount.objects.filter(trading_frozen=True).exists()
    assert not LogEntry.objects.exists()


def test_grant_posts_one_transaction_per_account_from_the_house(world, alpha_client):
    accounts = students(world)
    balances = [a.balance for a in accounts]
    before = last_txn_id()
    response = run(
        alpha_client, ACCOUNTS, "grant_or_deduct", accounts,
        direction="grant", amount="250.5", reason="Won the quiz",
    )  # fmt: skip
    assert response.status_code == 302
    txns = new_transactions(before)
    assert [t.kind for t in txns] == [Kind.GRANT, Kind.GRANT]
    for txn, account in zip(txns, accounts, strict=True):
        assert txn.memo == "Won the quiz"
        assert txn.created_by == world.alpha
        legs = sorted((e.pocket, e.account_id, e.amount) for e in txn.entries.all())
        assert legs == [
            ("account", account.pk, Decimal("250.5")),
            ("house", None, Decimal("-250.5")),
        ]
    for account, balance in zip(accounts, balances, strict=True):
        account.refresh_from_db()
        assert account.balance == balance + Decimal("250.5")
        assert logged(account, "Granted 250.5")
    assert_ledger_invariants()


def test_deduct_posts_a_deduction_and_too_large_a_deduction_writes_nothing(world, alpha_client):
    accounts = students(world)
    rich, poor = accounts
    poor_balance = poor.balance
    before = last_txn_id()
    refused = run(
        alpha_client, ACCOUNTS, "grant_or_deduct", accounts,
        direction="deduct", amount=str(poor_balance + 1), reason="Penalty",
    )  # fmt: skip
    assert refused.status_code == 200
    assert b"Nothing was changed" in refused.content
    assert last_txn_id() == before
    assert not LogEntry.objects.exists()

    response = run(
        alpha_client, ACCOUNTS, "grant_or_deduct", [rich],
        direction="deduct", amount="100", reason="Late homework",
    )  # fmt: skip
    assert response.status_code == 302
    (txn,) = new_transactions(before)
    assert txn.kind == Kind.DEDUCT
    legs = sorted((e.pocket, e.amount) for e in txn.entries.all())
    assert legs == [("account", Decimal("-100")), ("house", Decimal("100"))]
    assert_ledger_invariants()


def test_a_refused_deduction_names_the_student_whose_balance_is_short(world, alpha_client):
    from accounts.services import account_adjust

    accounts = students(world)
    account_adjust(account_id=accounts[0].pk, amount=Decimal(5000), reason="Prize")
    for account in accounts:
        account.refresh_from_db()
    short = min(accounts, key=lambda a: a.balance)
    other = max(accounts, key=lambda a: a.balance)
    before = last_txn_id()
    refused = run(
        alpha_client, ACCOUNTS, "grant_or_deduct", accounts,
        direction="deduct", amount=str(short.balance + 1), reason="Penalty",
    )  # fmt: skip
    message = refused.content.decode().split("Nothing was changed.", 1)[1].split("</", 1)[0]
    assert f"The free balance of {short.user.username} in {world.alpha_class.name} is" in message
    assert other.user.username not in message
    assert last_txn_id() == before


def test_invalid_adjustment_input_is_a_form_error(world, alpha_client):
    before = last_txn_id()
    for data in (
        {"direction": "grant", "amount": "abc", "reason": "x"},
        {"direction": "grant", "amount": "-5", "reason": "x"},
        {"direction": "grant", "amount": "1.123456789", "reason": "x"},
        {"direction": "grant", "amount": "5", "reason": ""},
        {"direction": "steal", "amount": "5", "reason": "x"},
    ):
        response = run(alpha_client, ACCOUNTS, "grant_or_deduct", students(world), **data)
        assert response.status_code == 200, data
        assert b"errorlist" in response.content, data
    assert last_txn_id() == before


def test_reset_closes_positions_cancels_orders_and_restores_the_starting_balance(
    world, alpha_client
):
    accounts = students(world)
    holder = accounts[0]  # alpha-student-1 holds an open long
    open_before = list(Position.objects.filter(account=holder, status="open"))
    assert open_before
    btc = open_before[0].instrument
    btc.mark_price = Decimal("61000")
    btc.save()
    before = last_txn_id()
    response = run(alpha_client, ACCOUNTS, "reset_to_starting_balance", accounts)
    assert response.status_code == 302
    txns = new_transactions(before)
    kinds = [t.kind for t in txns]
    assert kinds.count(Kind.CLOSE) == len(open_before)
    assert kinds.count(Kind.RESET) == 2  # both balances differ from the start after trading
    assert not Position.objects.filter(account__in=accounts, status="open").exists()
    assert not Order.objects.filter(account__in=accounts, status="resting").exists()
    for account in accounts:
        account.refresh_from_db()
        assert account.balance == world.alpha_class.starting_balance
        assert logged(account, "Reset to the starting balance")
    for txn in txns:
        if txn.kind == Kind.RESET:
            assert txn.created_by == world.alpha
            assert txn.memo == "Reset to the starting balance 10000"  # not 10000.00000000
            assert sum(e.amount for e in txn.entries.all()) == 0
    assert_ledger_invariants()


def test_reset_without_a_mark_price_resets_nobody(world, alpha_client):
    accounts = students(world)
    position = Position.objects.filter(account__in=accounts, status="open").first()
    assert position is not None
    position.instrument.mark_price = None
    position.instrument.save()
    balances = [a.balance for a in accounts]
    before = last_txn_id()
    response = run(alpha_client, ACCOUNTS, "reset_to_starting_balance", accounts)
    assert response.status_code == 302
    assert last_txn_id() == before
    assert Position.objects.filter(pk=position.pk, status="open").exists()
    assert [TradingAccount.objects.get(pk=a.pk).balance for a in accounts] == balances
    assert not LogEntry.objects.exists()
    assert_ledger_invariants()


def test_freeze_and_unfreeze_move_no_money_and_are_logged(world, alpha_client):
    accounts = students(world)
    before = last_txn_id()
    assert run(alpha_client, ACCOUNTS, "freeze_trading", accounts).status_code == 302
    assert all(TradingAccount.objects.get(pk=a.pk).trading_frozen for a in accounts)
    assert all(logged(a, "Freeze trading") for a in accounts)
    assert run(alpha_client, ACCOUNTS, "unfreeze_trading", accounts[:1]).status_code == 302
    assert not TradingAccount.objects.get(pk=accounts[0].pk).trading_frozen
    assert TradingAccount.objects.get(pk=accounts[1].pk).trading_frozen
    assert last_txn_id() == before
    # Freezing again an account that is frozen changes nothing, and is neither logged nor
    # counted.
    again = alpha_client.post(
        ACCOUNTS,
        {"action": "freeze_trading", "_selected_action": [accounts[1].pk], "confirm": "yes"},
        follow=True,
    )
    assert "Nothing was changed: the selected accounts were frozen already." in (
        again.content.decode()
    )
    assert "0 account(s)" not in again.content.decode()
    assert (
        LogEntry.objects.filter(
            object_id=str(accounts[1].pk), change_message="Freeze trading."
        ).count()
        == 1
    )
    assert_ledger_invariants()


def test_close_and_open_trading_now(world, alpha_client):
    classroom = world.alpha_class
    before = last_txn_id()
    assert run(alpha_client, CLASSROOMS, "close_trading", [classroom]).status_code == 302
    assert not Classroom.objects.get(pk=classroom.pk).is_trading_open()
    assert run(alpha_client, CLASSROOMS, "open_trading", [classroom]).status_code == 302
    assert Classroom.objects.get(pk=classroom.pk).is_trading_open()
    assert logged(classroom, "Closed trading now") and logged(classroom, "Opened trading now")
    # Opening it again changes nothing, and says so instead of counting it.
    again = alpha_client.post(
        CLASSROOMS,
        {"action": "open_trading", "_selected_action": [classroom.pk], "confirm": "yes"},
        follow=True,
    ).content.decode()
    assert "Nothing was changed: trading was open already" in again
    assert LogEntry.objects.filter(change_message__contains="Opened trading now").count() == 1
    assert last_txn_id() == before
    assert_ledger_invariants()


@pytest.mark.parametrize(
    ("opens", "closes"),
    [
        (None, timedelta(hours=-1)),
        (timedelta(days=1), None),
        (timedelta(days=1), timedelta(days=2)),
    ],
)
def test_open_trading_now_opens_it_even_outside_the_trading_window(
    world, alpha_client, opens, closes
):
    classroom = world.alpha_class
    now = timezone.now()
    Classroom.objects.filter(pk=classroom.pk).update(
        trading_opens_at=opens and now + opens, trading_closes_at=closes and now + closes
    )
    assert not Classroom.objects.get(pk=classroom.pk).is_trading_open()
    assert run(alpha_client, CLASSROOMS, "open_trading", [classroom]).status_code == 302
    assert Classroom.objects.get(pk=classroom.pk).is_trading_open()


def test_regenerate_join_code(world, alpha_client):
    classroom = world.alpha_class
    old = classroom.join_code
    before = last_txn_id()
    assert run(alpha_client, CLASSROOMS, "regenerate_join_code", [classroom]).status_code == 302
    classroom.refresh_from_db()
    assert classroom.join_code != old
    assert not Classroom.objects.filter(join_code=old).exists()
    assert logged(classroom, "Regenerated the join code")
    assert last_txn_id() == before
    assert_ledger_invariants()


def test_export_grades_downloads_csv_and_posts_nothing(world, alpha_client):
    before = last_txn_id()
    response = run(alpha_client, CLASSROOMS, "export_grades", [world.alpha_class])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    body = response.content.decode()
    assert "alpha-student-1" in body and "bravo" not in body
    assert logged(world.alpha_class, "Exported the grades")
    assert last_txn_id() == before
    assert_ledger_invariants()


def test_top_up_and_draw_down_the_insurance_fund_through_the_ledger(world, alpha_client):
    classroom = world.alpha_class
    fund = ClassroomPocket.objects.get(classroom=classroom, kind="insurance")
    before = last_txn_id()
    response = run(
        alpha_client, CLASSROOMS, "adjust_insurance_fund", [classroom],
        direction="top_up", amount="500", reason="Crash lesson next week",
    )  # fmt: skip
    assert response.status_code == 302
    (txn,) = new_transactions(before)
    assert (txn.kind, txn.memo, txn.created_by) == (
        Kind.INSURANCE_ADJUST,
        "Crash lesson next week",
        world.alpha,
    )
    legs = sorted((e.pocket, e.amount) for e in txn.entries.all())
    assert legs == [("house", Decimal(-500)), ("insurance", Decimal(500))]
    assert ClassroomPocket.objects.get(pk=fund.pk).balance == fund.balance + 500
    assert logged(classroom, "Topped up the insurance fund by 500")
    # Drawing down more than the fund holds changes nothing.
    too_much = run(
        alpha_client, CLASSROOMS, "adjust_insurance_fund", [classroom],
        direction="draw_down", amount="1000000", reason="Oops",
    )  # fmt: skip
    assert too_much.status_code == 302
    messages = [str(m) for m in too_much.wsgi_request._messages]
    assert any(f"The insurance fund of {classroom.name} holds" in m for m in messages)
    assert ClassroomPocket.objects.get(pk=fund.pk).balance == fund.balance + 500
    assert last_txn_id() == txn.pk
    assert_ledger_invariants()


def test_copy_instruments_from_another_of_her_classrooms(world, alpha_client):
    second = make_classroom(instructor=world.alpha, name="alpha second class")
    source = Instrument.objects.get(classroom=world.alpha_class)
    response = run(
        alpha_client, CLASSROOMS, "copy_instruments", [second], source=world.alpha_class.pk
    )
    assert response.status_code == 302
    copy = Instrument.objects.get(classroom=second)
    assert (copy.symbol, copy.mark_price, copy.taker_fee_rate) == (
        source.symbol,
        source.mark_price,
        source.taker_fee_rate,
    )
    assert [t.as_tier() for t in copy.tiers.all()] == [t.as_tier() for t in source.tiers.all()]
    assert copy.feed.kind == source.feed.kind
    assert list(copy.feed.replay_points.values_list("offset_seconds", "price")) == list(
        source.feed.replay_points.values_list("offset_seconds", "price")
    )
    assert logged(second, f"Copied {source.symbol} from alpha class")
    # Copying again adds nothing, and says so; the source is untouched.
    again = alpha_client.post(
        CLASSROOMS,
        {"action": "copy_instruments", "_selected_action": [second.pk], "confirm": "yes",
         "source": world.alpha_class.pk},
        follow=True,
    ).content.decode()  # fmt: skip
    assert "Nothing was copied: every symbol of alpha class is in the selected" in again
    assert "into 0 classroom(s)" not in again
    assert Instrument.objects.filter(classroom=second).count() == 1
    assert Instrument.objects.get(pk=source.pk).classroom == world.alpha_class


def test_copy_instruments_skips_a_symbol_the_target_has_in_another_letter_case(world, alpha_client):
    source = Instrument.objects.get(classroom=world.alpha_class)
    second = make_classroom(instructor=world.alpha, name="alpha second class")
    own = make_instrument(second, symbol=source.symbol.lower(), mark="123")
    response = run(
        alpha_client, CLASSROOMS, "copy_instruments", [second], source=world.alpha_class.pk
    )
    assert response.status_code == 302
    assert list(Instrument.objects.filter(classroom=second)) == [own]


def test_copy_instruments_never_from_a_classroom_being_copied_into(world, alpha_client):
    second = make_classroom(instructor=world.alpha, name="alpha second class")
    response = run(
        alpha_client, CLASSROOMS, "copy_instruments", [second, world.alpha_class],
        source=world.alpha_class.pk,
    )  # fmt: skip
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not Instrument.objects.filter(classroom=second).exists()


def test_copy_instruments_only_from_her_own_classrooms(world, alpha_client):
    second = make_classroom(instructor=world.alpha, name="alpha second class")
    response = run(
        alpha_client, CLASSROOMS, "copy_instruments", [second], source=world.bravo_class.pk
    )
    assert response.status_code == 200  # the form refuses a classroom she cannot see
    assert "Select a valid choice" in response.content.decode()
    assert not Instrument.objects.filter(classroom=second).exists()


def test_copy_instruments_from_a_classroom_without_any_is_a_form_error(world, alpha_client):
    empty = make_classroom(instructor=world.alpha, name="alpha empty class")
    response = run(
        alpha_client, CLASSROOMS, "copy_instruments", [world.alpha_class], source=empty.pk
    )
    assert response.status_code == 200
    assert "alpha empty class has no instruments to copy." in response.content.decode()
    assert not LogEntry.objects.exists()


def test_amounts_typed_with_an_exponent_or_zeros_read_plainly_in_messages(world, alpha_client):
    accounts = students(world)
    granted = alpha_client.post(
        ACCOUNTS,
        {"action": "grant_or_deduct", "_selected_action": [a.pk for a in accounts],
         "confirm": "yes", "direction": "grant", "amount": "1e3", "reason": "Prize"},
        follow=True,
    ).content.decode()  # fmt: skip
    assert f"Granted 1,000 to {len(accounts)} account(s)." in granted
    assert all(logged(a, "Granted 1,000: Prize") for a in accounts)
    deducted = alpha_client.post(
        ACCOUNTS,
        {"action": "grant_or_deduct", "_selected_action": [accounts[0].pk],
         "confirm": "yes", "direction": "deduct", "amount": "5.50", "reason": "Late"},
        follow=True,
    ).content.decode()  # fmt: skip
    assert "Deducted 5.5 from 1 account(s)." in deducted
    assert logged(accounts[0], "Deducted 5.5: Late")
    topped = alpha_client.post(
        CLASSROOMS,
        {"action": "adjust_insurance_fund", "_selected_action": [world.alpha_class.pk],
         "confirm": "yes", "direction": "top_up", "amount": "2E+2", "reason": "Buffer"},
        follow=True,
    ).content.decode()  # fmt: skip
    assert "by 200 each." in topped
    assert logged(world.alpha_class, "Topped up the insurance fund by 200: Buffer")
    assert "E+" not in granted + deducted + topped


def test_pages_with_nothing_to_edit_offer_close_instead_of_save(world, alpha_client):
    from liquidation.models import Scenario

    account = students(world)[0]
    scenario = Scenario.objects.get(instrument__classroom=world.alpha_class)
    instrument = Instrument.objects.get(classroom=world.alpha_class)
    for url in (
        reverse("admin:accounts_tradingaccount_change", args=[account.pk]),
        reverse("admin:liquidation_scenario_change", args=[scenario.pk]),
    ):
        html = alpha_client.get(url).content.decode()
        assert 'name="_save"' not in html and 'name="_continue"' not in html, url
        assert "closelink" in html, url
    editable = alpha_client.get(reverse("admin:positions_instrument_change", args=[instrument.pk]))
    assert 'name="_save"' in editable.content.decode()


def test_an_insurance_fund_top_up_past_what_it_may_hold_is_refused_plainly(world, alpha_client):
    """Each top-up is a valid amount, but the fund stays below the largest free balance, so
    that repeated top-ups never overflow the ledger's columns (a server error before)."""
    top_up = {"action": "adjust_insurance_fund", "_selected_action": [world.alpha_class.pk],
              "confirm": "yes", "direction": "top_up", "reason": "Big buffer"}  # fmt: skip
    first = alpha_client.post(CLASSROOMS, {**top_up, "amount": "999999999999000"})
    assert first.status_code == 302
    before = last_txn_id()
    fund = ClassroomPocket.objects.get(classroom=world.alpha_class, kind="insurance")
    refused = alpha_client.post(CLASSROOMS, {**top_up, "amount": "999999999999000"}, follow=True)
    assert refused.status_code == 200
    page = refused.content.decode()
    assert "Nothing was changed. The insurance fund of alpha class would grow too large." in page
    assert last_txn_id() == before
    assert ClassroomPocket.objects.get(pk=fund.pk).balance == fund.balance
    assert_ledger_invariants()


def test_the_reset_page_counts_what_a_reset_will_close_and_cancel(world, alpha_client):
    from accounts.money import money_text

    accounts = students(world)
    open_count = Position.objects.filter(account__in=accounts, status="open").count()
    resting = Order.objects.filter(account__in=accounts, status="resting").count()
    assert open_count and resting  # the class has both
    asked = alpha_client.post(
        ACCOUNTS,
        {"action": "reset_to_starting_balance", "_selected_action": [a.pk for a in accounts]},
    ).content.decode()
    classroom = world.alpha_class
    start = f"{money_text(classroom.starting_balance, classroom.currency)} {classroom.currency}"
    assert f"{open_count} open position(s) are closed at the current mark" in asked
    assert f"{resting} resting order(s) cancelled" in asked
    assert f"({classroom.name}: {start})" in asked and "cannot be undone" in asked
    assert Position.objects.filter(account__in=accounts, status="open").count() == open_count
