"""The engine's liquidations against ARCHITECTURE.md §5, worked by hand.

Each row is reproducible on paper from the formulas: LP = (WB + cum - s*Q*EP) / (Q*mmr - s*Q),
BP = EP - s*WB/Q, MB = WB + s*Q*(P - EP), MM = Q*P*mmr - cum (the first BTC bracket: mmr 0.4%,
cum 0); on liquidation the whole MB (if positive) goes to the insurance fund, the fee
(rate x Q x P, at most MB) included; past BP the fund pays the house -MB.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Classroom, ClassroomPocket, TradingAccount
from liquidation.models import LiquidationEvent
from positions.models import Fill, Order, Position
from positions.services import position_add_margin, position_close, position_remove_margin
from tests.engine.helpers import open_position, set_price
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db

D = Decimal


def _pockets(classroom) -> dict[str, Decimal]:
    return dict(ClassroomPocket.objects.filter(classroom=classroom).values_list("kind", "balance"))


def _assert_liquidated(position, *, collateral, mark, balance, fee, free, pockets_before):
    """Liquidated at ``mark``: the collateral is gone, MB (if positive) is in the fund, the
    house got the price loss, the fund paid any shortfall, the free balance did not move."""
    position.refresh_from_db()
    assert position.status == "liquidated" and position.exit_price == mark
    event = LiquidationEvent.objects.get(position=position)
    assert event.collateral_lost == collateral
    assert event.liquidation_fee == fee
    assert event.leftover == max(balance, D(0)) - fee
    assert event.shortfall == max(-balance, D(0))
    assert event.insurance_paid == event.shortfall  # the fund holds enough here
    after = _pockets(position.account.classroom)
    assert after["insurance"] - pockets_before["insurance"] == balance  # MB in, or -MB out
    assert after["house"] - pockets_before["house"] == collateral - balance
    assert after["fees"] == pockets_before["fees"]
    assert TradingAccount.objects.get(pk=position.account_id).balance == free
    fill = Fill.objects.get(position=position, kind="liquidation")
    assert fill.price == mark
    # The price loss, which stops at the collateral (MB = WB + pnl).
    assert fill.realized_pnl == max(balance, D(0)) - collateral
    assert_ledger_invariants()


def _free(account) -> Decimal:
    return TradingAccount.objects.get(pk=account.pk).balance


@pytest.mark.parametrize(
    ("side", "extra", "lp", "bp", "inside"),
    [
        # WB 6 + 0.384 = 6.384: LP = (6.384 - 600) / (0.00004 - 0.01) = 59,600; BP 59,361.6
        ("long", "0.384", D("59600"), D("59361.6"), D("59600.1")),
        # WB 6 + 0.416 = 6.416: LP = (6.416 + 600) / (0.00004 + 0.01) = 60,400; BP 60,641.6
        ("short", "0.416", D("60400"), D("60641.6"), D("60399.9")),
    ],
)
def test_a_mark_exactly_at_the_liquidation_price_liquidates_and_one_tick_before_does_not(
    classroom, btc, account, side, extra, lp, bp, inside
):
    """MB <= MM liquidates: at LP itself MB = MM (long 6.384 - 4 = 2.384 = 596 x 0.4%;
    short 6.416 - 4 = 2.416 = 604 x 0.4%), one tick before it MB > MM."""
    Classroom.objects.filter(pk=classroom.pk).update(liquidation_fee_rate=D("0.001"))
    position = open_position(account, btc, side, "0.01", 100, extra_collateral=extra)
    assert (position.liquidation_price, position.bankruptcy_price) == (lp, bp)
    free = _free(account)

    assert set_price(btc, inside).liquidated == []
    pockets = _pockets(classroom)
    assert set_price(btc, lp).liquidated == [position.pk]

    balance = D("2.384") if side == "long" else D("2.416")
    fee = D("0.01") * lp * D("0.001")  # 0.596 / 0.604, below MB
    _assert_liquidated(
        position,
        collateral=D(extra) + D(6),
        mark=lp,
        balance=balance,
        fee=fee,
        free=free,
        pockets_before=pockets,
    )


@pytest.mark.parametrize(
    ("side", "mark", "shortfall"),
    [
        ("long", D("58000"), D("80")),  # BP 58,800: MB = 120 - 0.1 x 2,000 = -80
        ("short", D("62000"), D("80")),  # BP 61,200: MB = 120 - 0.1 x 2,000 = -80
    ],
)
def test_a_gap_past_bankruptcy_is_symmetric_for_longs_and_shorts(
    classroom, btc, account, side, mark, shortfall
):
    position = open_position(account, btc, side, "0.1", 50)
    assert position.bankruptcy_price == (D("58800") if side == "long" else D("61200"))
    free, pockets = _free(account), _pockets(classroom)

    set_price(btc, mark)

    _assert_liquidated(
        position,
        collateral=D(120),
        mark=mark,
        balance=-shortfall,
        fee=D(0),
        free=free,
        pockets_before=pockets,
    )
    assert Position.objects.get(pk=position.pk).realized_pnl == D(-120)


@pytest.mark.parametrize(
    ("change", "collateral", "lp", "outside", "breached"),
    [
        # 20x: WB 300 + 100 added = 400: LP = (400 - 6,000) / (0.0004 - 0.1) = 56,224.899...
        ("add", D(400), D("56224.8995983936"), D("56225"), D("56224.8")),
        # 20x with 100 extra (WB 400), 100 removed = 300: LP = 5,700 / 0.0996 = 57,228.915...
        ("remove", D(300), D("57228.9156626507"), D("57229"), D("57228.9")),
    ],
)
def test_margin_added_or_removed_moves_the_liquidation_the_engine_applies(
    classroom, btc, account, change, collateral, lp, outside, breached
):
    if change == "add":
        position = open_position(account, btc, "long", "0.1", 20)
        position = position_add_margin(position_id=position.pk, amount="100")
    else:
        position = open_position(account, btc, "long", "0.1", 20, extra_collateral="100")
        position = position_remove_margin(position_id=position.pk, amount="100")
    assert position.liquidation_price == lp  # stored rounded up, towards the mark
    free = _free(account)

    assert set_price(btc, outside).liquidated == []
    pockets = _pockets(classroom)
    assert set_price(btc, breached).liquidated == [position.pk]

    balance = collateral + D("0.1") * (breached - D(60000))  # 17.48 / 22.89
    notional_fee = D("0.1") * breached * D("0.005")  # 28.11 / 28.61: capped at MB
    assert notional_fee > balance
    _assert_liquidated(
        position,
        collateral=collateral,
        mark=breached,
        balance=balance,
        fee=balance,
        free=free,
        pockets_before=pockets,
    )


def test_after_a_partial_close_the_engine_settles_only_the_collateral_left(classroom, btc, account):
    """Half closed at the entry: 150 of the 300 released, the LP unchanged (57,228.915...);
    the liquidation then loses only the 150 left: MB = 150 - 0.05 x 2,771.1 = 11.445."""
    position = open_position(account, btc, "long", "0.1", 20)
    position_close(position_id=position.pk, quantity="0.05")
    position.refresh_from_db()
    assert position.collateral.amount == D(150) and position.quantity == D("0.05")
    assert position.liquidation_price == D("57228.9156626507")
    free, pockets = _free(account), _pockets(classroom)

    set_price(btc, "57228.9")

    _assert_liquidated(
        position,
        collateral=D(150),
        mark=D("57228.9"),
        balance=D("11.445"),
        fee=D("11.445"),
        free=free,
        pockets_before=pockets,
    )


@pytest.mark.parametrize(
    ("side", "level", "gap"),
    [("long", "stop_loss", "59000"), ("short", "stop_loss", "61000")],
)
def test_a_stop_loss_the_mark_gaps_past_closes_at_the_mark_not_at_its_level(
    btc, account, side, level, gap
):
    """A stop-loss is a stop-market order: on a gap it fills at the gapped price (here with
    no spread, the mark), and short of the LP it is a close, not a liquidation."""
    stop = "59500" if side == "long" else "60500"
    position = open_position(account, btc, side, "0.1", 10, **{level: stop})

    result = set_price(btc, gap)

    position.refresh_from_db()
    assert result.liquidated == [] and result.orders_triggered == 1
    assert position.status == "closed" and position.exit_price == D(gap)
    order = Order.objects.get(position=position, trigger=level)
    assert order.stop_price == D(stop)
    assert position.realized_pnl == D(-100)  # 0.1 x 1,000 against the position
    assert_ledger_invariants()


def test_a_short_gap_the_fund_pays_in_part_is_covered_by_deleveraging_a_long_at_bp():
    """Short 0.1 @ 60,000 at 50x (WB 120, BP 61,200) gaps to 62,000: MB = -80. The fund has
    30, so ADL covers 50 from the long: ceil(50 / 800) = 0.063 of it closed at 61,200, its
    profit 0.063 x 1,200 = 75.6 and 378 of its 600 collateral back to its free balance."""
    from accounts.services import account_adjust
    from liquidation.models import AdlFill
    from tests.factories import make_classroom, make_instrument, make_student

    classroom = make_classroom(name="Thin fund", max_leverage=100, insurance_fund_seed=D(30))
    btc = make_instrument(classroom)
    alice, bob = make_student(classroom), make_student(classroom)
    account_adjust(account_id=bob.pk, amount=D(1000), reason="Room for the long")
    bankrupt = open_position(alice, btc, "short", "0.1", 50)
    winner = open_position(bob, btc, "long", "0.1", 10)
    frees, pockets = dict(TradingAccount.objects.values_list("pk", "balance")), _pockets(classroom)

    set_price(btc, "62000")

    event = LiquidationEvent.objects.get(position=bankrupt)
    assert (event.shortfall, event.insurance_paid, event.adl_amount) == (D(80), D(30), D(50))
    fill = AdlFill.objects.get(liquidation=event)
    assert (fill.position_id, fill.quantity, fill.price) == (winner.pk, D("0.063"), D(61200))
    assert fill.realized_pnl == D("75.6")
    winner.refresh_from_db()
    assert winner.status == "open" and winner.quantity == D("0.037")
    assert winner.collateral.amount == D(222)
    assert winner.liquidation_price is not None and winner.liquidation_price < D(60000)
    assert TradingAccount.objects.get(pk=bob.pk).balance == frees[bob.pk] + D(378) + D("75.6")
    assert TradingAccount.objects.get(pk=alice.pk).balance == frees[alice.pk]
    after = _pockets(classroom)
    assert after["insurance"] == 0
    # The house: +120 collateral and +30 from the fund, -75.6 paid to the long.
    assert after["house"] - pockets["house"] == D(150) - D("75.6")
    assert_ledger_invariants()


@given(
    side=st.sampled_from(["long", "short"]),
    leverage=st.integers(1, 100),
    lots=st.one_of(st.integers(1, 2000), st.integers(2000, 60_000)),  # up to 3.6M notional
    extra=st.integers(0, 300),
    added=st.integers(-200, 200),
    closed_lots=st.integers(0, 1000),
    move_permille=st.integers(-600, 600),
    fund=st.sampled_from([D(0), D(40), D(5000)]),
    fee_rate=st.sampled_from([D(0), D("0.005"), D("0.02")]),
    returned=st.booleans(),
)
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_any_liquidation_settles_as_the_formulas_say(
    db, side, leverage, lots, extra, added, closed_lots, move_permille, fund, fee_rate, returned
):
    """After margin added or removed and part of it closed, a position is liquidated exactly
    when MB <= MM at the mark; then the collateral is gone, the free balance gains only a
    returned leftover, the fund gains MB (fee included) or pays what it holds of -MB, and
    nothing else moves."""
    from accounts.errors import DomainError
    from accounts.money import money_charged, money_pnl
    from accounts.services import account_adjust
    from liquidation.settlement import breached_position_ids, liquidate_batch
    from positions import margin
    from positions.models import Instrument
    from tests.factories import make_classroom, make_instrument, make_student

    with transaction.atomic():
        policy = "return_to_trader" if returned else "insurance_fund"
        classroom = make_classroom(max_leverage=125, insurance_fund_seed=fund)
        Classroom.objects.filter(pk=classroom.pk).update(
            liquidation_fee_rate=fee_rate, leftover_policy=policy
        )
        btc = make_instrument(classroom, taker_fee_rate=D(0))
        account = make_student(classroom)
        account_adjust(account_id=account.pk, amount=D(200_000), reason="Room for big positions")
        try:
            position = open_position(
                account, btc, side, str(D(lots) / 1000), leverage, extra_collateral=extra
            )
            if added > 0:
                position = position_add_margin(position_id=position.pk, amount=added)
            elif added < 0:
                position = position_remove_margin(position_id=position.pk, amount=-added)
            if 0 < closed_lots < lots:
                position_close(position_id=position.pk, quantity=str(D(closed_lots) / 1000))
                position.refresh_from_db()
        except DomainError:
            transaction.set_rollback(True)
            return
        collateral = position.collateral.amount
        mark = (D(60000) * (1000 + move_permille) / 1000).quantize(D("0.1"))
        Instrument.objects.filter(pk=btc.pk).update(mark_price=mark)
        free, pockets = _free(account), _pockets(classroom)
        instrument = Instrument.objects.select_related("classroom").get(pk=btc.pk)

        result = liquidate_batch(
            instrument=instrument, mark=mark, rows=breached_position_ids(btc.pk, mark)
        )

        q, ep = position.quantity, position.entry_price
        breached = margin.is_liquidatable(
            side=side,
            entry_price=ep,
            quantity=q,
            collateral=collateral,
            mark_price=mark,
            tiers=instrument.margin_tiers(),
        )
        assert result.liquidated == ([position.pk] if breached else [])
        after = _pockets(classroom)
        if not breached:
            assert after == pockets and _free(account) == free
        else:
            s = 1 if side == "long" else -1
            balance = collateral + money_pnl(s * q * (mark - ep))
            event = LiquidationEvent.objects.get(position=position)
            fee = min(money_charged(q * mark * fee_rate), max(balance, D(0)))
            back = max(balance, D(0)) - fee if returned else D(0)
            paid = min(max(-balance, D(0)), fund)
            assert event.liquidation_fee == fee
            assert event.returned_to_trader == back
            assert event.insurance_paid == paid
            assert _free(account) == free + back
            assert after["insurance"] - pockets["insurance"] == (
                balance - back if balance >= 0 else -paid
            )
            assert after["house"] - pockets["house"] == collateral - max(balance, D(0)) + paid
            assert Position.objects.get(pk=position.pk).collateral.amount == 0
        assert_ledger_invariants(classroom.pk)
        transaction.set_rollback(True)


@given(
    shorts=st.lists(
        st.tuples(
            st.integers(55_000, 66_000),  # entry
            st.integers(1, 200),  # lots of 0.001
            st.integers(1, 50),  # leverage
        ),
        min_size=1,
        max_size=5,
    ),
    mark=st.integers(50_000, 58_790),
    fund=st.sampled_from([D(0), D(30)]),
)
@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_deleveraging_covers_what_the_fund_cannot_from_the_best_ranked_at_bp(
    db, shorts, mark, fund
):
    """Long 0.1 @ 60,000 at 50x (WB 120, BP 58,800) gaps to the mark: shortfall -MB. The fund
    pays what it holds; ADL closes the shorts still in profit at BP, best score first, at
    BP, until the rest is covered or none is left; nobody else's money moves."""
    from accounts.errors import DomainError
    from accounts.services import account_adjust
    from liquidation.models import AdlFill
    from liquidation.settlement import adl_score, breached_position_ids, liquidate_batch
    from positions.models import Instrument
    from tests.factories import make_classroom, make_instrument, make_student

    with transaction.atomic():
        classroom = make_classroom(max_leverage=125, insurance_fund_seed=fund)
        btc = make_instrument(classroom, taker_fee_rate=D(0))
        bankrupt = open_position(make_student(classroom), btc, "long", "0.1", 50)
        opened = []
        for entry, lots, leverage in shorts:
            Instrument.objects.filter(pk=btc.pk).update(mark_price=entry)
            account = make_student(classroom)
            account_adjust(account_id=account.pk, amount=D(20_000), reason="Room")
            try:
                opened.append(open_position(account, btc, "short", str(D(lots) / 1000), leverage))
            except DomainError:
                continue
        mark_ = D(mark)
        Instrument.objects.filter(pk=btc.pk).update(mark_price=mark_)
        instrument = Instrument.objects.select_related("classroom").get(pk=btc.pk)
        frees = dict(TradingAccount.objects.values_list("pk", "balance"))
        bp = D(58800)
        eligible = [p for p in opened if p.entry_price > bp]
        ranked = sorted(
            eligible,
            key=lambda p: (
                -adl_score(position=p, collateral=p.collateral.amount, mark=mark_),
                p.pk,
            ),
        )

        liquidate_batch(
            instrument=instrument, mark=mark_, rows=breached_position_ids(btc.pk, mark_)
        )

        event = LiquidationEvent.objects.get(position=bankrupt)
        shortfall = -(D(120) + D("0.1") * (mark_ - D(60000)))
        assert event.shortfall == shortfall
        assert event.insurance_paid == min(shortfall, fund)
        needed = shortfall - event.insurance_paid
        capacity = sum((p.quantity * (bp - mark_) for p in eligible), D(0))
        assert event.adl_amount == min(needed, capacity)
        fills = {f.position_id: f for f in AdlFill.objects.filter(liquidation=event)}
        # The best-ranked first: those deleveraged are a prefix of the ranking.
        assert set(fills) == {p.pk for p in ranked[: len(fills)]}
        for position in opened:
            fill = fills.get(position.pk)
            account_id = position.account_id
            if fill is None:
                assert TradingAccount.objects.get(pk=account_id).balance == frees[account_id]
                continue
            assert fill.price == bp
            assert fill.realized_pnl == fill.quantity * (position.entry_price - bp) > 0
        assert_ledger_invariants(classroom.pk)
        transaction.set_rollback(True)
