"""The engine under real Redis, Celery worker and beat processes, and the faults it survives.

Each test builds the same market: two longs that a fall to 58,700 breaches (alice at 50x
gaps past her bankruptcy price, erin at 40x does not) and three positions it must leave
alone. After every fault: each breached position is liquidated exactly once, nothing else
changed, the ledger invariants hold, and the engine ticks again.

"Mid-tick" is made deterministic by holding, from the test, a row lock the tick needs:
the tick is then provably inside its liquidation transaction (or its price step) when
the fault strikes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest
from django.db.models import Count
from django.utils import timezone

from accounts.models import ClassroomPocket, LedgerTransaction, TradingAccount
from liquidation.models import EngineHeartbeat, LiquidationEvent, PriceFeed, PriceTick, Scenario
from liquidation.services import scenario_start
from positions.models import Fill, Instrument, Position
from tests.engine.helpers import open_position
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants
from tests.processes import (
    RunningProcess,
    database_url,
    flush_broker,
    free_port,
    start_beat,
    start_redis,
    start_worker,
    wait_until,
)

pytestmark = [pytest.mark.engine, pytest.mark.django_db(transaction=True)]

TICK = {"TICK_SECONDS": "0.5"}
CRASH_PRICE = Decimal("58700")


@dataclass
class Market:
    instrument: Instrument
    breached: set[int]
    untouched: set[int]
    balances: dict[int, Decimal]


def build_market() -> Market:
    classroom = make_classroom(name="Engine", max_leverage=100, insurance_fund_seed=Decimal(500))
    btc = make_instrument(classroom)
    PriceFeed.objects.create(instrument=btc, kind=PriceFeed.Kind.MANUAL)
    alice, bob, carol, dave, erin = (make_student(classroom) for _ in range(5))
    breached = {
        open_position(alice, btc, "long", "0.1", 50).pk,
        open_position(erin, btc, "long", "0.1", 40).pk,
    }
    untouched = {
        open_position(bob, btc, "long", "0.1", 10).pk,
        open_position(carol, btc, "short", "0.1", 50).pk,
        open_position(dave, btc, "long", "0.1", 20).pk,
    }
    balances = dict(TradingAccount.objects.values_list("pk", "balance"))
    return Market(btc, breached, untouched, balances)


def crash(market: Market) -> None:
    scenario_start(
        instrument_id=market.instrument.pk, kind=Scenario.Kind.SET_PRICE, target_price=CRASH_PRICE
    )


def assert_liquidated_exactly_once(market: Market) -> None:
    liquidated = set(Position.objects.filter(status="liquidated").values_list("pk", flat=True))
    assert liquidated == market.breached
    assert set(LiquidationEvent.objects.values_list("position_id", flat=True)) == market.breached
    per_position = (
        LedgerTransaction.objects.filter(kind="liquidation")
        .values("position_id")
        .annotate(n=Count("id"))
    )
    assert {row["position_id"]: row["n"] for row in per_position} == dict.fromkeys(
        market.breached, 1
    )
    fills = Fill.objects.filter(kind="liquidation").values("position_id").annotate(n=Count("id"))
    assert {row["position_id"]: row["n"] for row in fills} == dict.fromkeys(market.breached, 1)
    assert (
        set(
            Position.objects.filter(pk__in=market.untouched, status="open").values_list(
                "pk", flat=True
            )
        )
        == market.untouched
    )
    # Free balances: untouched by liquidation (the insurance-fund policy returns nothing).
    assert dict(TradingAccount.objects.values_list("pk", "balance")) == market.balances
    assert_ledger_invariants()


def wait_for_liquidations(market: Market, timeout: float = 30) -> None:
    wait_until(
        lambda: LiquidationEvent.objects.count() >= len(market.breached),
        timeout=timeout,
        message="the liquidation of the breached positions",
    )


def instrument_ticks(market: Market) -> int:
    return EngineHeartbeat.objects.filter(
        instrument=market.instrument, finished_at__isnull=False
    ).count()


def wait_for_ticks(market: Market, n: int, timeout: float = 30) -> None:
    start = instrument_ticks(market)
    wait_until(
        lambda: instrument_ticks(market) >= start + n,
        timeout=timeout,
        message=f"{n} more ticks",
    )


def assert_resumed_within_three_ticks(market: Market, since) -> None:  # type: ignore[no-untyped-def]
    """Every liquidation happened by the third finished tick started after ``since``."""
    ticks = list(
        EngineHeartbeat.objects.filter(
            instrument=market.instrument, started_at__gte=since, finished_at__isnull=False
        )
        .order_by("started_at")
        .values_list("finished_at", flat=True)[:3]
    )
    assert len(ticks) == 3 and ticks[2] is not None
    last = max(LiquidationEvent.objects.values_list("created_at", flat=True))
    assert last <= ticks[2]


@contextlib.contextmanager
def held_row_lock(sql: str, params: list[object]) -> Iterator[psycopg.Connection]:
    """Hold a row lock from another connection until the block ends."""
    conn = psycopg.connect(database_url())
    try:
        conn.execute("BEGIN")
        conn.execute(sql, params)
        yield conn
    finally:
        conn.rollback()
        conn.close()


def engine_waiting_on_lock() -> bool:
    with psycopg.connect(database_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def pool_children(worker: RunningProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def insurance_lock(market: Market):  # type: ignore[no-untyped-def]
    pocket = ClassroomPocket.objects.get(
        classroom_id=market.instrument.classroom_id, kind="insurance"
    )
    return held_row_lock(
        "SELECT 1 FROM accounts_classroompocket WHERE id = %s FOR UPDATE", [pocket.pk]
    )


def test_a_crash_liquidates_exactly_the_breached_positions_within_two_ticks():
    flush_broker()
    market = build_market()
    worker = start_worker(beat=True, env=TICK)
    try:
        wait_for_ticks(market, 2)
        crash(market)
        wait_for_liquidations(market)
        wait_for_ticks(market, 2)
    finally:
        worker.stop()
    at_crash = list(
        EngineHeartbeat.objects.filter(
            instrument=market.instrument, mark_price=CRASH_PRICE, finished_at__isnull=False
        )
        .order_by("started_at")
        .values_list("finished_at", flat=True)[:2]
    )
    assert len(at_crash) == 2 and at_crash[-1] is not None
    assert max(LiquidationEvent.objects.values_list("created_at", flat=True)) <= at_crash[-1]
    assert set(LiquidationEvent.objects.values_list("mark_price", flat=True)) == {CRASH_PRICE}
    assert_liquidated_exactly_once(market)
    assert PriceTick.objects.filter(instrument=market.instrument).exists()


def test_sigkill_of_the_pool_child_mid_tick():
    flush_broker()
    market = build_market()
    # A standalone beat, so that the worker's only children are its pool processes.
    worker = start_worker(env=TICK)
    beat = start_beat(env=TICK)
    try:
        wait_for_ticks(market, 1)
        crash(market)
        with insurance_lock(market):
            wait_until(engine_waiting_on_lock, message="a tick blocked inside its liquidation")
            children = pool_children(worker)
            assert children
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: set(pool_children(worker)) - set(children),
                message="a new pool child",
            )
            # Every liquidation needs the fund's row: nothing can have been written.
            assert not LiquidationEvent.objects.exists()
        # The killed tick's backend now fails on its dead socket and rolls back.
        since = timezone.now()
        wait_for_liquidations(market)
        wait_for_ticks(market, 3)
    finally:
        beat.stop()
        worker.stop()
    assert "signal 9" in worker.output() or "SIGKILL" in worker.output()
    assert_liquidated_exactly_once(market)
    assert_resumed_within_three_ticks(market, since)


def test_sigkill_of_the_whole_worker_and_a_restart():
    flush_broker()
    market = build_market()
    worker = start_worker(beat=True, env=TICK)
    try:
        wait_for_ticks(market, 1)
        crash(market)
        with insurance_lock(market):
            wait_until(engine_waiting_on_lock, message="a tick blocked inside its liquidation")
            worker.stop(signal.SIGKILL)
            assert not LiquidationEvent.objects.exists()
        since = timezone.now()
        worker = start_worker(beat=True, env=TICK, name="restarted")
        wait_for_liquidations(market)
        wait_for_ticks(market, 3)
    finally:
        worker.stop()
    assert_liquidated_exactly_once(market)
    assert_resumed_within_three_ticks(market, since)


def test_two_beats_at_once_move_the_price_once_per_slot():
    flush_broker()
    market = build_market()
    PriceFeed.objects.filter(instrument=market.instrument).update(
        kind=PriceFeed.Kind.SIMULATED, volatility="0.0001", jump_probability=0
    )
    worker = start_worker(env=TICK, concurrency=2)
    beats = [start_beat(env=TICK, name="beat-a"), start_beat(env=TICK, name="beat-b")]
    try:
        wait_for_ticks(market, 6)
        crash(market)
        wait_for_liquidations(market)
        wait_for_ticks(market, 2)
    finally:
        for beat in beats:
            beat.stop()
        worker.stop()
    fan_outs = EngineHeartbeat.objects.filter(instrument__isnull=True).count()
    steps = PriceFeed.objects.get(instrument=market.instrument).step
    # Two beats fan out about twice per slot; the price moved once per claimed slot.
    assert steps == PriceTick.objects.filter(instrument=market.instrument).count()
    assert steps < fan_outs * 0.8
    assert_liquidated_exactly_once(market)


def test_redis_killed_and_restarted():
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    env = {**TICK, "CELERY_BROKER_URL": url, "REDIS_URL": url}
    redis_server = start_redis(port)
    market = build_market()
    worker = start_worker(beat=True, env=env)
    try:
        wait_for_ticks(market, 2)
        redis_server.send_signal(signal.SIGKILL)
        redis_server.wait(timeout=10)
        crash(market)
        time.sleep(2)  # let the worker and beat notice the broker is gone
        assert not LiquidationEvent.objects.exists()
        since = timezone.now()
        redis_server = start_redis(port)
        wait_for_liquidations(market, timeout=60)
        wait_for_ticks(market, 3, timeout=60)
    finally:
        worker.stop()
        redis_server.send_signal(signal.SIGTERM)
        redis_server.wait(timeout=10)
    assert_liquidated_exactly_once(market)
    ticks_after = EngineHeartbeat.objects.filter(
        instrument=market.instrument, started_at__gte=since, finished_at__isnull=False
    ).count()
    assert ticks_after >= 3


def test_a_tick_longer_than_the_interval_is_not_overlapped():
    flush_broker()
    market = build_market()
    worker = start_worker(beat=True, env=TICK, concurrency=2)
    try:
        wait_for_ticks(market, 1)
        crash(market)
        with held_row_lock(
            "SELECT 1 FROM positions_instrument WHERE id = %s FOR UPDATE", [market.instrument.pk]
        ):
            wait_until(engine_waiting_on_lock, message="a tick blocked in its price step")
            # The following ticks find the instrument still ticking and step aside.
            worker.wait_for_output("is still ticking", timeout=20)
            assert not LiquidationEvent.objects.exists()
        since = timezone.now()
        wait_for_liquidations(market)
        wait_for_ticks(market, 3)
    finally:
        worker.stop()
    assert_liquidated_exactly_once(market)
    assert_resumed_within_three_ticks(market, since)
    # Never two ticks of the instrument at once: their running intervals do not overlap.
    spans = list(
        EngineHeartbeat.objects.filter(instrument=market.instrument, finished_at__isnull=False)
        .order_by("started_at")
        .values_list("started_at", "finished_at")
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and start >= end
