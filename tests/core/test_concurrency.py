"""Simultaneous calls from separate database connections at one account and one position.

Why no deadlock can happen: every service locks the trading account row first, so calls
on one account queue up behind that lock and re-read everything under it; the classroom's
pockets come last, always insurance fund, then house, then fees (``POCKET_LOCK_ORDER``,
followed by ``ledger_post``, ``lock_classroom_pockets`` and the engine's liquidations).
Row locks are ``FOR NO KEY UPDATE``, so the engine's inserts that refer to a locked account
or position (foreign-key checks) never wait for them, and a transaction that acts on several
accounts or positions locks them all before its first posting
(``tests/engine/test_lock_order.py``). No service retries: lock ordering makes deadlocks
impossible, and each test below fails on any error that is not a domain refusal (a deadlock
or serialisation failure would surface as one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from functools import partial

import pytest
from django.db import IntegrityError, connection, connections, transaction

from accounts.errors import DomainError
from accounts.ledger import Leg, ledger_post, lock_classroom_pockets
from accounts.models import ClassroomPocket, LedgerEntry, LedgerTransaction, Membership
from accounts.services import classroom_join
from api.models import ApiKey
from api.services import MAX_ACTIVE_KEYS, api_key_create
from positions.models import Collateral, Fill, Order, Position
from positions.services import (
    order_place,
    position_add_margin,
    position_close,
    position_ledger_post,
    position_open,
    position_remove_margin,
)
from tests.factories import UserFactory, make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import wait_until

D = Decimal
Outcome = tuple[str, object]

pytestmark = pytest.mark.django_db(transaction=True)


def simultaneously(*calls: Callable[[], object]) -> list[Outcome]:
    """Run each call in its own thread and connection, all released by one barrier.

    Returns ("ok", result) or ("refused", code) per call; anything else fails the test.
    """
    barrier = threading.Barrier(len(calls))
    outcomes: list[Outcome | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            connection.ensure_connection()  # connect before the barrier, not after it
            barrier.wait(timeout=30)
            try:
                outcomes[index] = ("ok", call())
            except DomainError as exc:
                outcomes[index] = ("refused", exc.code)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a call never finished"
    assert not errors, f"unexpected errors: {errors!r}"
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def codes(outcomes: list[Outcome]) -> list[str]:
    return sorted(kind if kind == "ok" else str(value) for kind, value in outcomes)


@pytest.fixture
def market(db):
    classroom = make_classroom(max_leverage=125, insurance_fund_seed=D(1000))
    instrument = make_instrument(classroom)
    account = make_student(classroom)
    return classroom, instrument, account


def balance(account) -> Decimal:
    account.refresh_from_db()
    return account.balance


def test_simultaneous_opens_never_spend_more_than_the_free_balance(market):
    _, btc, account = market

    def open_half_btc():
        return position_open(
            account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=10
        )

    outcomes = simultaneously(*[open_half_btc] * 8)
    # Each costs 3,000 margin + 15 fee: three fit in 10,000, the other five are refused.
    assert codes(outcomes) == ["insufficient_balance"] * 5 + ["ok"] * 3
    assert balance(account) == D(10000) - 3 * D(3015)
    assert Position.objects.filter(account=account).count() == 3
    assert_ledger_invariants()


def test_simultaneous_full_closes_settle_once(market):
    _, btc, account = market
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="short", quantity="0.5", leverage=10
    )
    outcomes = simultaneously(*[lambda: position_close(position_id=position.pk)] * 6)
    assert codes(outcomes) == ["ok"] + ["position_not_open"] * 5
    assert Fill.objects.filter(position=position, kind="close").count() == 1
    # Back at the entry price: everything returns but the two fees (15 + 15).
    assert balance(account) == D(10000) - D(30)
    assert_ledger_invariants()


def test_partial_closes_and_margin_changes_racing_at_one_position(market):
    """Six partial closes of 0.1, margin added and removed, and new opens, all at once.

    At the entry price every coin of collateral eventually returns, so whatever the order
    the final balance is fixed: the start minus every fee and minus the new positions.
    """
    _, btc, account = market
    for _round in range(3):
        start = balance(account)
        position = position_open(
            account_id=account.pk,
            instrument_id=btc.pk,
            side="long",
            quantity="0.6",
            leverage=10,
            extra_collateral="1000",
        )
        assert position.collateral.amount == D(4600)
        pk = position.pk
        calls: list[Callable[[], object]] = []
        calls += [partial(position_close, position_id=pk, quantity="0.1")] * 6
        calls += [partial(position_add_margin, position_id=pk, amount="100")] * 3
        calls += [partial(position_remove_margin, position_id=pk, amount="50")] * 3
        calls += [
            lambda: position_open(
                account_id=account.pk,
                instrument_id=btc.pk,
                side="short",
                quantity="0.1",
                leverage=10,
            )
        ] * 2
        outcomes = simultaneously(*calls)
        closes, adds, removes, opens = outcomes[:6], outcomes[6:9], outcomes[9:12], outcomes[12:]
        assert codes(closes) == ["ok"] * 6
        assert set(codes(adds + removes)) <= {"ok", "position_not_open"}
        assert codes(opens) == ["ok"] * 2
        position.refresh_from_db()
        assert position.status == "closed"
        assert Collateral.objects.get(pk=position.pk).amount == 0
        # Open fee 18, six close fees of 3, two new shorts at 600 + 3 each.
        assert balance(account) == start - D(18) - 6 * D(3) - 2 * D(603)
        assert_ledger_invariants()


def long_with_room(btc, account) -> Position:
    """A long of 0.5 at 20x with 1,000 of extra collateral (2,500 in all): room for margin
    to come and go."""
    return position_open(
        account_id=account.pk,
        instrument_id=btc.pk,
        side="long",
        quantity="0.5",
        leverage=20,
        extra_collateral="1000",
    )


def test_simultaneous_margin_moves_lose_no_update(market):
    _, btc, account = market
    position = long_with_room(btc, account)
    start = balance(account)
    calls: list[Callable[[], object]] = []
    calls += [lambda: position_add_margin(position_id=position.pk, amount="100.5")] * 5
    calls += [lambda: position_remove_margin(position_id=position.pk, amount="75.25")] * 5
    outcomes = simultaneously(*calls)
    assert codes(outcomes) == ["ok"] * 10
    assert Collateral.objects.get(pk=position.pk).amount == D(2500) + 5 * D("100.5") - 5 * D(
        "75.25"
    )
    assert balance(account) == start - 5 * D("100.5") + 5 * D("75.25")
    position.refresh_from_db()
    assert position.liquidation_price is not None
    assert_ledger_invariants()


def test_a_repeated_client_order_id_under_concurrency_makes_one_order(market):
    _, btc, account = market

    def place():
        return order_place(
            account_id=account.pk,
            instrument_id=btc.pk,
            side="long",
            quantity="0.1",
            leverage=10,
            client_order_id="bot-42",
        )

    outcomes = simultaneously(*[place] * 6)
    assert codes(outcomes) == ["ok"] * 6
    assert len({order.pk for _, order in outcomes}) == 1  # type: ignore[attr-defined]
    assert Order.objects.filter(account=account).count() == 1
    assert Position.objects.filter(account=account).count() == 1
    assert balance(account) == D(10000) - D(603)
    assert_ledger_invariants()


@pytest.mark.parametrize(
    ("change", "moved"), [(position_add_margin, D(100)), (position_remove_margin, D(-100))]
)
def test_simultaneous_retries_of_one_margin_change_move_it_once(market, change, moved):
    _, btc, account = market
    position = long_with_room(btc, account)
    start = balance(account)
    retry = partial(change, position_id=position.pk, amount="100", client_request_id="bot-m1")
    outcomes = simultaneously(*[retry] * 6)
    assert codes(outcomes) == ["ok"] * 6
    # One of them moved the margin; every other one found it and moved nothing.
    assert sorted(p.repeated for _, p in outcomes) == [False] + [True] * 5  # type: ignore[attr-defined]
    assert Collateral.objects.get(pk=position.pk).amount == D(2500) + moved
    assert balance(account) == start - moved
    assert LedgerTransaction.objects.filter(client_request_id="bot-m1").count() == 1
    assert_ledger_invariants()


def test_the_database_refuses_a_second_posting_of_one_client_request_id(market):
    """The account's lock already queues retries; the unique constraint is the last line of
    defence should a margin change ever post without it."""
    classroom, btc, account = market
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    start = balance(account)

    def post() -> str:
        try:
            with transaction.atomic():
                position_ledger_post(
                    classroom_id=classroom.pk,
                    kind=LedgerTransaction.Kind.ADD_MARGIN,
                    position_id=position.pk,
                    legs=[
                        Leg(LedgerEntry.Pocket.ACCOUNT, -D(10), account_id=account.pk),
                        Leg(
                            LedgerEntry.Pocket.COLLATERAL,
                            D(10),
                            account_id=account.pk,
                            position_id=position.pk,
                        ),
                    ],
                    client_request_id="bot-m2",
                )
        except IntegrityError:
            return "duplicate"
        return "posted"

    outcomes = simultaneously(*[post] * 4)
    assert sorted(str(value) for _, value in outcomes) == ["duplicate"] * 3 + ["posted"]
    assert LedgerTransaction.objects.filter(client_request_id="bot-m2").count() == 1
    assert balance(account) == start - D(10)
    assert_ledger_invariants()


def test_simultaneous_joins_by_one_student_fund_one_account(market):
    classroom, _, _ = market
    user = UserFactory.create()
    outcomes = simultaneously(
        *[lambda: classroom_join(user_id=user.pk, join_code=classroom.join_code)] * 4
    )
    assert codes(outcomes) == ["already_joined"] * 3 + ["ok"]
    assert Membership.objects.filter(user=user).count() == 1
    assert LedgerEntry.objects.filter(account__user=user).count() == 1
    assert_ledger_invariants()


def test_a_shortfall_close_and_a_liquidation_never_deadlock(market):
    """Both take the insurance fund before the house, so neither waits while holding the other.

    The poster does what ``liquidate_batch`` does: lock the fund, then post legs that move the
    house and the fund. Once the close is waiting on a pocket lock, the poster moves the
    house. Were the close holding the house while waiting for the fund, PostgreSQL would
    abort one of them with "deadlock detected".
    """
    classroom, btc, account = market
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    btc.mark_price = D(56000)  # past the bankruptcy price of 57,000: a 500 shortfall
    btc.save(update_fields=["mark_price"])
    fund_held = threading.Event()
    close_waiting = threading.Event()
    close_pid: list[int] = []
    errors: list[BaseException] = []

    def hold_fund_then_post() -> None:
        try:
            with transaction.atomic():
                lock_classroom_pockets(classroom_id=classroom.pk, kinds=["insurance"])
                fund_held.set()
                assert close_waiting.wait(timeout=30)
                ledger_post(
                    classroom_id=classroom.pk,
                    kind=LedgerTransaction.Kind.INSURANCE_SEED,
                    legs=[
                        Leg(LedgerEntry.Pocket.HOUSE, D(-50)),
                        Leg(LedgerEntry.Pocket.INSURANCE, D(50)),
                    ],
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def close() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                close_pid.append(cursor.fetchone()[0])
            assert fund_held.wait(timeout=30)
            position_close(position_id=position.pk, past_liquidation_ok=True)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    poster = threading.Thread(target=hold_fund_then_post)
    closer = threading.Thread(target=close)
    poster.start()
    closer.start()

    def close_blocked() -> bool:
        if not close_pid:
            return False
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [close_pid[0]]
            )
            row = cursor.fetchone()
        return row is not None and row[0] == "Lock"

    wait_until(close_blocked, timeout=30, message="the close waiting on a pocket lock")
    close_waiting.set()
    poster.join(timeout=60)
    closer.join(timeout=60)
    assert not errors, errors
    position.refresh_from_db()
    assert position.status == "closed"
    fund = ClassroomPocket.objects.get(classroom=classroom, kind="insurance").balance
    assert fund == D(1000) + D(50) - D(500)
    assert_ledger_invariants()


def test_simultaneous_shortfalls_never_overdraw_the_insurance_fund(market):
    """Three students' positions gapped past bankruptcy close at once; the fund holds 1,000."""
    classroom, btc, first = market
    accounts = [first, make_student(classroom), make_student(classroom)]
    positions = [
        position_open(
            account_id=a.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
        )
        for a in accounts
    ]
    house_before = ClassroomPocket.objects.get(classroom=classroom, kind="house").balance
    btc.mark_price = D(56000)  # each loses 2,000 on 1,500 collateral: 500 short each
    btc.save(update_fields=["mark_price"])
    outcomes = simultaneously(
        *[partial(position_close, position_id=p.pk, past_liquidation_ok=True) for p in positions],
        *[partial(position_add_margin, position_id=p.pk, amount="10") for p in positions],
    )
    assert codes(outcomes[:3]) == ["ok"] * 3
    # Margin cannot rescue a position the mark has put past its liquidation price.
    assert set(codes(outcomes[3:])) <= {"position_liquidating", "position_not_open"}
    added = {value.account_id: D(10) for kind, value in outcomes[3:] if kind == "ok"}  # type: ignore[attr-defined]
    # The shortfalls (1,500 less whatever margin got in before its close) exceed the fund:
    # it pays out exactly what it holds, never more, and the house keeps every collateral.
    fund = ClassroomPocket.objects.get(classroom=classroom, kind="insurance").balance
    house = ClassroomPocket.objects.get(classroom=classroom, kind="house").balance
    assert fund == 0
    assert house == house_before + 3 * D(1500) + sum(added.values(), D(0)) + D(1000)
    for account in accounts:
        # Nothing comes back from a position past bankruptcy; nothing more is taken.
        assert balance(account) == D(10000) - D(1515) - added.get(account.pk, D(0))
    assert_ledger_invariants()


def test_an_insurance_fund_draw_down_racing_shortfall_closes_never_overdraws_it(market):
    """Two positions gapped past bankruptcy (500 short each) close while the instructor
    draws 600 out of the 1,000 fund: whichever goes first, the fund never goes below zero,
    no money appears or vanishes, and nothing deadlocks."""
    from liquidation.instructor import insurance_fund_adjust

    classroom, btc, first = market
    accounts = [first, make_student(classroom)]
    positions = [
        position_open(
            account_id=a.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
        )
        for a in accounts
    ]
    btc.mark_price = D(56000)
    btc.save(update_fields=["mark_price"])
    outcomes = simultaneously(
        *[partial(position_close, position_id=p.pk, past_liquidation_ok=True) for p in positions],
        partial(
            insurance_fund_adjust, classroom_id=classroom.pk, amount="-600", reason="Next term"
        ),
    )
    assert codes(outcomes[:2]) == ["ok", "ok"]
    # The draw-down goes through only if it came first (1,000 - 600 leaves 400 for the
    # shortfalls); after any close the fund holds 500 or less and it is refused whole.
    assert outcomes[2][0] == "ok" or outcomes[2] == ("refused", "insufficient_balance")
    drawn = LedgerTransaction.objects.filter(kind="insurance_adjust").count()
    assert drawn == (1 if outcomes[2][0] == "ok" else 0)
    # Either way the shortfalls took everything the fund had left, and no more.
    assert ClassroomPocket.objects.get(classroom=classroom, kind="insurance").balance == 0
    for account in accounts:
        assert balance(account) == D(10000) - D(1515)  # loss stopped at the collateral
    assert_ledger_invariants()


def test_simultaneous_resting_orders_never_hold_more_than_the_free_balance(market):
    _, btc, account = market

    def limit_half_btc():
        return order_place(
            account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
            price="59000", quantity="0.5", leverage=10,
        )  # fmt: skip

    outcomes = simultaneously(*[limit_half_btc] * 8)
    # Each holds 2,950 margin + 14.75 fee at its limit: three fit in 10,000.
    assert codes(outcomes) == ["insufficient_balance"] * 5 + ["ok"] * 3
    assert balance(account) == D(10000) - 3 * D("2964.75")
    held = Order.objects.filter(account=account, status="resting").values_list(
        "held_margin", flat=True
    )
    assert sorted(held) == [D("2964.75")] * 3
    assert_ledger_invariants()


def limits_the_mark_has_reached(account, btc) -> list[Order]:
    """Four resting buys limited at 59,000 (each holding 592.95), then the mark at 58,000:
    the engine would trigger every one of them."""
    orders = [
        order_place(
            account_id=account.pk,
            instrument_id=btc.pk,
            side="long",
            type="limit",
            price="59000",
            quantity="0.1",
            leverage=10,
        )
        for _ in range(4)
    ]
    btc.mark_price = D(58000)
    btc.save(update_fields=["mark_price"])
    return orders


def test_a_cancel_racing_the_engines_trigger_releases_the_hold_once(market):
    from liquidation.engine import execute_triggered_order
    from positions.services import order_cancel

    _, btc, account = market
    orders = limits_the_mark_has_reached(account, btc)
    for order in orders:
        outcomes = simultaneously(
            partial(order_cancel, order_id=order.pk),
            partial(execute_triggered_order, order.pk),
        )
        order.refresh_from_db()
        if order.status == "cancelled":
            assert outcomes[0][0] == "ok" and outcomes[1] == ("ok", False)
        else:
            assert order.status == "filled"
            assert outcomes == [("refused", "order_not_cancellable"), ("ok", True)]
        assert order.held_margin == 0
        releases = LedgerEntry.objects.filter(pocket="order", order_id=order.pk, amount__lt=0)
        assert [e.amount for e in releases] == [D("-592.95")]
    filled = Order.objects.filter(pk__in=[o.pk for o in orders], status="filled").count()
    # Each filled order cost 580 margin + 2.90 fee at 58,000; each cancelled one nothing.
    assert balance(account) == D(10000) - filled * D("582.9")
    assert_ledger_invariants()


def test_racing_retries_of_one_close_client_order_id_close_once(market):
    _, btc, account = market
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=10
    )
    retry = partial(
        position_close, position_id=position.pk, quantity="0.1", client_order_id="close-once"
    )
    outcomes = simultaneously(*[retry] * 8)
    assert codes(outcomes) == ["ok"] * 8
    closes = [result for _, result in outcomes]
    assert len({c.close_order.pk for c in closes}) == 1  # type: ignore[attr-defined]
    assert sorted(c.repeated for c in closes) == [False] + [True] * 7  # type: ignore[attr-defined]
    assert {c.quantity for c in closes} == {D("0.4")}  # type: ignore[attr-defined]
    assert Fill.objects.filter(position=position, kind="close").count() == 1
    assert Order.objects.filter(client_order_id="close-once").count() == 1
    # At the entry price a tenth returns its 600 margin less the 3 fee of its close.
    assert balance(account) == D(10000) - D(3015) + D(600) - D(3)
    assert_ledger_invariants()


def test_racing_replacements_of_one_order_leave_one_resting_order_and_one_hold(market):
    from positions.services import order_replace

    _, btc, account = market
    order = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        price="59000", quantity="0.1", leverage=10,
    )  # fmt: skip
    prices = ["58000", "57000", "56000", "55000"]
    outcomes = simultaneously(*[partial(order_replace, order_id=order.pk, price=p) for p in prices])
    assert codes(outcomes) == ["ok", "order_not_cancellable", "order_not_cancellable",
                               "order_not_cancellable"]  # fmt: skip
    resting = Order.objects.get(account=account, status="resting")
    assert resting.replaces_id == order.pk
    # 0.1 x price / 10 margin + 0.05% fee, held once, at the price that won.
    assert balance(account) == D(10000) - resting.held_margin
    won = resting.price
    assert won is not None and resting.held_margin == won / 100 + won * D("0.00005")
    # Retries of one replacement (a double click) replace once.
    retry = partial(order_replace, order_id=resting.pk, quantity="0.2", client_order_id="again")
    outcomes = simultaneously(*[retry] * 6)
    assert codes(outcomes) == ["ok"] * 6
    assert len({result.pk for _, result in outcomes}) == 1  # type: ignore[attr-defined]
    assert Order.objects.filter(account=account, status="resting").count() == 1
    assert_ledger_invariants()


def test_a_replacement_racing_the_engines_trigger_fills_or_replaces_once(market):
    from liquidation.engine import execute_triggered_order
    from positions.services import order_replace

    _, btc, account = market
    orders = limits_the_mark_has_reached(account, btc)
    for order in orders:
        outcomes = simultaneously(
            partial(order_replace, order_id=order.pk, price="50000"),
            partial(execute_triggered_order, order.pk),
        )
        order.refresh_from_db()
        if order.status == "cancelled":  # replaced first; the trigger found nothing to fill
            assert outcomes[0][0] == "ok" and outcomes[1] == ("ok", False)
            assert Order.objects.get(replaces=order).status == "resting"
        else:
            assert order.status == "filled"
            assert outcomes == [("refused", "order_not_cancellable"), ("ok", True)]
        assert order.held_margin == 0
    assert_ledger_invariants()


def test_simultaneous_key_creations_never_pass_the_active_key_limit(db):
    user = UserFactory.create()
    for number in range(MAX_ACTIVE_KEYS - 2):
        api_key_create(user_id=user.pk, name=f"bot {number}")

    def create():
        return api_key_create(user_id=user.pk, name="racing bot")

    outcomes = simultaneously(*[create] * 6)
    assert codes(outcomes) == ["invalid_request"] * 4 + ["ok"] * 2
    assert ApiKey.objects.filter(user=user, revoked_at__isnull=True).count() == MAX_ACTIVE_KEYS
