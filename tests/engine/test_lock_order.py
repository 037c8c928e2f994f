"""Students, instructors and the engine acting on the same accounts at once never deadlock.

Each test makes one transaction queue behind another's row lock in the order that used to
end in PostgreSQL's "deadlock detected", by holding a lock in a third transaction or by
pausing a service between two of its locks, and then lets them all run. Any error but a
domain refusal fails the test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connections, transaction

from accounts.errors import DomainError
from accounts.models import ClassroomPocket, LedgerTransaction, TradingAccount
from accounts.services import accounts_adjust
from liquidation import settlement
from liquidation.instructor import account_reset
from liquidation.models import PriceFeed
from positions import services
from positions.models import Position
from positions.services import position_add_margin, position_close
from tests.engine.helpers import open_position, set_price
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import wait_until, waiting_on_locks

D = Decimal

pytestmark = pytest.mark.django_db(transaction=True)


class Racers:
    """Threads with their own connections; domain refusals are recorded, not raised."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.refusals: list[str] = []

    def start(self, target: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except DomainError as exc:
                self.refusals.append(exc.code)
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        self.threads.append(thread)
        thread.start()
        return thread

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads), "a racer never finished"
        assert not self.errors, self.errors


def hold_house(classroom, held: threading.Event, release: threading.Event) -> Callable[[], None]:
    def hold() -> None:
        with transaction.atomic():
            ClassroomPocket.objects.select_for_update().get(classroom=classroom, kind="house")
            held.set()
            assert release.wait(timeout=60)

    return hold


@pytest.fixture
def market(db):
    classroom = make_classroom(name="Locks", max_leverage=125, insurance_fund_seed=D(1000))
    btc = make_instrument(classroom)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    return classroom, btc


def test_a_students_margin_change_during_the_liquidation_of_that_position_never_deadlocks(
    market,
):
    """The engine's batch holds the position and posts entries that refer to the account;
    the student holds the account and waits for the position. The account lock is
    ``FOR NO KEY UPDATE``, so the batch's foreign-key check does not wait for it."""
    classroom, btc = market
    account = make_student(classroom)
    doomed = open_position(account, btc, "long", "0.01", 100)
    held, release = threading.Event(), threading.Event()
    racers = Racers()
    racers.start(hold_house(classroom, held, release))
    assert held.wait(timeout=30)
    racers.start(lambda: set_price(btc, "59000"))  # past the liquidation price 59,638.55
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the batch queueing")
    racers.start(lambda: position_add_margin(position_id=doomed.pk, amount="50"))
    wait_until(lambda: waiting_on_locks() >= 2, timeout=30, message="the student queueing")
    release.set()
    racers.join()

    assert Position.objects.get(pk=doomed.pk).status == "liquidated"
    assert racers.refusals == ["position_not_open"]
    account.refresh_from_db()
    assert account.balance == classroom.starting_balance - D(6) - D("0.3")  # IM and fee
    assert_ledger_invariants()


def test_a_grant_to_several_accounts_and_a_students_close_never_deadlock(market, monkeypatch):
    """The grant locks every selected account before its first posting takes the house, so
    it never holds the house while waiting for an account whose student waits for it."""
    classroom, btc = market
    first, second = make_student(classroom), make_student(classroom)
    winner = open_position(second, btc, "long", "0.01", 10)
    btc.mark_price = D(61000)
    btc.save(update_fields=["mark_price"])
    locked, resume = threading.Event(), threading.Event()
    current_mark = services.current_mark

    def pause_under_the_position_lock(instrument):
        locked.set()
        assert resume.wait(timeout=60)
        return current_mark(instrument)

    monkeypatch.setattr(services, "current_mark", pause_under_the_position_lock)
    racers = Racers()
    racers.start(lambda: position_close(position_id=winner.pk))
    assert locked.wait(timeout=30)
    racers.start(
        lambda: accounts_adjust(
            account_ids=[first.pk, second.pk], amount=D(100), reason="Bonus for the quiz"
        )
    )
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the grant queueing")
    resume.set()
    racers.join()

    assert Position.objects.get(pk=winner.pk).status == "closed"
    assert LedgerTransaction.objects.filter(kind="grant").count() == 2
    assert not racers.refusals
    assert_ledger_invariants()


def test_resetting_an_account_while_the_engine_liquidates_one_of_its_positions_never_deadlocks(
    market, monkeypatch
):
    """The reset locks all the account's open positions before its first close takes the
    house, so it never holds the house while waiting for a position the batch holds.

    The batch pauses holding the breached position, before it locks the insurance fund and
    the house to pay the gap. Had the reset closed the other position first, it would hold
    the house while waiting for the breached one, and the batch would wait for the house.
    """
    classroom, btc = market
    eth = make_instrument(classroom, symbol="ETHUSDT", mark="3000")
    account = make_student(classroom)
    safe = open_position(account, eth, "long", "1", 2)
    doomed = open_position(account, btc, "long", "0.01", 100)
    eth.mark_price = D(3100)  # closing the safe one in profit posts against the house
    eth.save(update_fields=["mark_price"])
    holding, resume = threading.Event(), threading.Event()
    lock_pockets = settlement.lock_classroom_pockets

    def pause_holding_the_positions(**kwargs):
        holding.set()
        assert resume.wait(timeout=60)
        return lock_pockets(**kwargs)

    monkeypatch.setattr(settlement, "lock_classroom_pockets", pause_holding_the_positions)
    racers = Racers()
    racers.start(lambda: set_price(btc, "59000"))  # past the bankruptcy price 59,400: a gap
    assert holding.wait(timeout=30)
    racers.start(lambda: account_reset(account_id=account.pk))
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the reset queueing")
    resume.set()
    racers.join()

    assert not racers.refusals
    assert Position.objects.get(pk=doomed.pk).status == "liquidated"
    assert Position.objects.get(pk=safe.pk).status == "closed"
    assert TradingAccount.objects.get(pk=account.pk).balance == classroom.starting_balance
    assert_ledger_invariants()


def test_a_students_close_queued_behind_the_liquidation_of_that_position_is_refused(
    market, monkeypatch
):
    """The batch holds the position first: the student's close waits for it, then finds the
    position liquidated and is refused; the free balance paid only the opening."""
    classroom, btc = market
    account = make_student(classroom)
    doomed = open_position(account, btc, "long", "0.01", 100)
    holding, resume = threading.Event(), threading.Event()
    lock_pockets = settlement.lock_classroom_pockets

    def pause_holding_the_positions(**kwargs):
        holding.set()
        assert resume.wait(timeout=60)
        return lock_pockets(**kwargs)

    monkeypatch.setattr(settlement, "lock_classroom_pockets", pause_holding_the_positions)
    racers = Racers()
    racers.start(lambda: set_price(btc, "59000"))  # past the bankruptcy price 59,400: a gap
    assert holding.wait(timeout=30)
    racers.start(lambda: position_close(position_id=doomed.pk))
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the close queueing")
    resume.set()
    racers.join()

    assert racers.refusals == ["position_not_open"]
    assert Position.objects.get(pk=doomed.pk).status == "liquidated"
    assert TradingAccount.objects.get(pk=account.pk).balance == (
        classroom.starting_balance - D(6) - D("0.3")  # IM and fee
    )
    assert_ledger_invariants()


def test_a_position_a_student_is_closing_is_skipped_by_the_tick_and_closed_once(
    market, monkeypatch
):
    """The student's close holds the position first: the batch skips it (SKIP LOCKED) rather
    than wait, the close completes at the mark it read, and the next tick finds nothing to
    liquidate. One close, no liquidation, nothing paid twice."""
    classroom, btc = market
    account = make_student(classroom)
    closing = open_position(account, btc, "long", "0.01", 100)
    locked, resume = threading.Event(), threading.Event()
    current_mark = services.current_mark

    def pause_under_the_position_lock(instrument):
        if not locked.is_set():
            locked.set()
            assert resume.wait(timeout=60)
        return current_mark(instrument)

    monkeypatch.setattr(services, "current_mark", pause_under_the_position_lock)
    racers = Racers()
    racers.start(lambda: position_close(position_id=closing.pk))
    assert locked.wait(timeout=30)

    passed_over = set_price(btc, "59500")  # past the liquidation price 59,638.55, not the BP

    resume.set()
    racers.join()
    assert passed_over.liquidated == [] and not passed_over.errors
    assert Position.objects.get(pk=closing.pk).status == "closed"
    assert set_price(btc, "59500").liquidated == []
    assert not LedgerTransaction.objects.filter(kind="liquidation").exists()
    assert LedgerTransaction.objects.filter(kind="close", position_id=closing.pk).count() == 1
    assert_ledger_invariants()
