"""An instructor edits the market while the engine ticks it: a saved change page writes what
the instructor edited and never puts back the mark, or the feed's progress, that a tick
wrote while the page was being saved.

Each test holds a row in a third transaction so that a tick and the admin's save queue
behind it in the order of a real race (the tick first), then lets both run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import ClassroomPocket
from accounts.services import accounts_adjust
from liquidation import engine
from liquidation.engine import TickResult
from liquidation.models import PriceFeed, Scenario
from liquidation.services import scenario_start
from positions.models import Instrument
from tests.admin.forms import admin_form_data
from tests.factories import make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import wait_until, waiting_on_locks

D = Decimal

pytestmark = pytest.mark.django_db(transaction=True)


class Race:
    """Threads with their own connections; any exception fails the test."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, target: Callable[[], object]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                self.errors.append(exc)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        self.threads.append(thread)
        thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in self.threads), "a racer never finished"
        assert not self.errors, self.errors


def hold_row(model, pk: int, held: threading.Event, release: threading.Event) -> Callable[[], None]:
    def hold() -> None:
        with transaction.atomic():
            model.objects.select_for_update().get(pk=pk)
            held.set()
            assert release.wait(timeout=60)

    return hold


class SlotTick:
    """The beat's tick of an instrument, scheduled when called; ``again`` delivers the same
    task a second time, as a redelivery does (however much later it runs)."""

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self.scheduled = timezone.now()

    def __call__(self) -> TickResult:
        self.scheduled = timezone.now()
        return engine.tick_instrument(self.instrument.pk, self.scheduled)

    def again(self) -> TickResult:
        return engine.tick_instrument(self.instrument.pk, self.scheduled, now=self.scheduled)

    @property
    def slot(self) -> object:
        return engine.slot_start(self.scheduled)


def race_a_tick_with_a_save(row, pk: int, tick: Callable[[], object], save: Callable[[], object]):
    held, release = threading.Event(), threading.Event()
    race = Race()
    race.start(hold_row(row, pk, held, release))
    assert held.wait(timeout=30)
    race.start(tick)
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the tick queueing")
    race.start(save)
    wait_until(lambda: waiting_on_locks() >= 2, timeout=30, message="the save queueing")
    release.set()
    race.join()


def test_saving_an_instrument_during_a_tick_keeps_the_mark_the_tick_set(market):
    _, btc, client = market
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    data = admin_form_data(client.get(page))
    data["taker_fee_rate"] = "0.0006"
    saved: list[int] = []
    scenario_start(instrument_id=btc.pk, kind=Scenario.Kind.SET_PRICE, target_price="42000")

    race_a_tick_with_a_save(
        Instrument,
        btc.pk,
        tick=SlotTick(btc),
        save=lambda: saved.append(client.post(page, data).status_code),
    )

    assert saved == [302]
    btc.refresh_from_db()
    assert btc.taker_fee_rate == D("0.0006")
    assert btc.mark_price == D(42000)  # the crash the tick published, not the mark before it


def test_saving_a_feed_during_a_tick_keeps_the_step_and_slot_the_tick_claimed(market):
    """Put back, the claimed slot would let a redelivered task of that slot move the price a
    second time, and the walk would take a step it took already."""
    _, btc, client = market
    feed = PriceFeed.objects.get(instrument=btc)
    PriceFeed.objects.filter(pk=feed.pk).update(kind=PriceFeed.Kind.SIMULATED, step=7)
    page = reverse("admin:liquidation_pricefeed_change", args=[feed.pk])
    data = admin_form_data(client.get(page))
    data["volatility"] = "0.002"
    saved: list[int] = []
    ticked = SlotTick(btc)

    race_a_tick_with_a_save(
        PriceFeed,
        feed.pk,
        tick=ticked,
        save=lambda: saved.append(client.post(page, data).status_code),
    )

    assert saved == [302]
    feed.refresh_from_db()
    assert feed.volatility == D("0.002")
    assert (feed.step, feed.last_tick_at) == (8, ticked.slot)
    assert ticked.again().status == "resumed"  # the same slot again moves nothing


def test_saving_the_instrument_page_with_its_feed_keeps_what_the_tick_claimed(market):
    _, btc, client = market
    feed = PriceFeed.objects.get(instrument=btc)
    PriceFeed.objects.filter(pk=feed.pk).update(step=7)
    page = reverse("admin:positions_instrument_change", args=[btc.pk])
    data = admin_form_data(client.get(page))
    data["feed-0-kind"] = PriceFeed.Kind.SIMULATED
    saved: list[int] = []
    ticked = SlotTick(btc)

    race_a_tick_with_a_save(
        PriceFeed,
        feed.pk,
        tick=ticked,
        save=lambda: saved.append(client.post(page, data).status_code),
    )

    assert saved == [302]
    feed.refresh_from_db()
    assert (feed.kind, feed.step, feed.last_tick_at) == ("simulated", 8, ticked.slot)


def test_replaying_a_csv_during_a_tick_neither_deadlocks_nor_puts_back_the_slot(market):
    _, btc, client = market
    feed = PriceFeed.objects.get(instrument=btc)
    upload = SimpleUploadedFile("crash.csv", b"0,60000\n10,42000\n", content_type="text/csv")
    sent: list[int] = []

    def replay() -> None:
        response = client.post(
            reverse("admin:positions_instrument_changelist"),
            {
                "action": "replay_csv",
                "_selected_action": [btc.pk],
                "confirm": "yes",
                "speed": "1",
                "csv_file": upload,
            },
        )
        sent.append(response.status_code)

    ticked = SlotTick(btc)
    race_a_tick_with_a_save(PriceFeed, feed.pk, tick=ticked, save=replay)

    assert sent == [302]
    feed.refresh_from_db()
    assert feed.kind == PriceFeed.Kind.REPLAY
    assert list(feed.replay_points.values_list("price", flat=True)) == [D(60000), D(42000)]
    assert feed.last_tick_at == ticked.slot
    assert ticked.again().status == "resumed"


def test_posting_a_trading_accounts_page_during_a_grant_never_writes_back_its_balance(market):
    """The page has nothing to edit (money moves through the actions), but a POST to it
    still saved the row as read: a grant landing meanwhile left a free balance that its
    ledger entries no longer add up to."""
    _, btc, client = market
    account = make_student(btc.classroom)
    page = reverse("admin:accounts_tradingaccount_change", args=[account.pk])
    saved: list[int] = []
    held, release = threading.Event(), threading.Event()
    race = Race()

    def hold_house() -> None:
        with transaction.atomic():
            ClassroomPocket.objects.select_for_update().get(classroom=btc.classroom, kind="house")
            held.set()
            assert release.wait(timeout=60)

    race.start(hold_house)
    assert held.wait(timeout=30)
    race.start(lambda: accounts_adjust(account_ids=[account.pk], amount=D(100), reason="Quiz"))
    wait_until(lambda: waiting_on_locks() >= 1, timeout=30, message="the grant queueing")
    race.start(lambda: saved.append(client.post(page, {"_continue": "1"}).status_code))
    wait_until(lambda: saved or waiting_on_locks() >= 2, timeout=30, message="the POST")
    release.set()
    race.join()

    assert saved == [302]
    account.refresh_from_db()
    assert account.balance == btc.classroom.starting_balance + 100
    assert_ledger_invariants()
