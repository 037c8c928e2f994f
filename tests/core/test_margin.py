"""The pure margin maths: worked examples, Binance's BTCUSDT brackets and properties."""

from __future__ import annotations

import itertools
from decimal import Decimal, localcontext

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from positions import margin
from positions.margin import (
    Tier,
    bankruptcy_price,
    initial_margin,
    is_liquidatable,
    liquidation_price,
    maintenance_margin,
    margin_balance,
    margin_ratio,
    tiers_from_table,
    unrealized_pnl,
)
from tests.core.profiles import PURE
from tests.factories import BTC_BRACKETS

D = Decimal
BTC = tiers_from_table(BTC_BRACKETS)
FLAT = tiers_from_table([(D(0), None, D("0.004"), 125)])


def div40(a: Decimal, b: Decimal) -> Decimal:
    """``a / b`` to the 40 significant digits margin.py works with."""
    with localcontext() as ctx:
        ctx.prec = 40
        return a / b


def mul40(a: Decimal, b: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 40
        return a * b


# --- worked examples (Binance USDⓈ-M isolated margin, see positions/margin.py) -------------


def test_initial_margin_of_a_125x_long():
    assert initial_margin(entry_price=D(60000), quantity=D("0.01"), leverage=125) == D("4.8")


def test_worked_long_liquidation_and_bankruptcy_prices():
    kwargs = {"entry_price": D(60000), "quantity": D("0.01"), "collateral": D("4.8")}
    lp = liquidation_price(side="long", tiers=BTC, **kwargs)
    assert lp is not None
    assert str(lp).startswith("59759.036144578313253012")
    assert lp == div40(D("595.2"), D("0.00996"))  # (WB - Q*EP) / (Q*mmr - Q), exactly
    assert bankruptcy_price(side="long", **kwargs) == D(59520)


def test_worked_short_liquidation_and_bankruptcy_prices():
    kwargs = {"entry_price": D(60000), "quantity": D("0.01"), "collateral": D("4.8")}
    lp = liquidation_price(side="short", tiers=BTC, **kwargs)
    assert lp is not None
    assert str(lp).startswith("60239.043824701195219123")
    assert bankruptcy_price(side="short", **kwargs) == D(60480)


def test_worked_long_with_added_margin():
    im = initial_margin(entry_price=D(60000), quantity=D("0.5"), leverage=20)
    assert im == D(1500)
    kwargs = {"entry_price": D(60000), "quantity": D("0.5"), "collateral": im + D(500)}
    lp = liquidation_price(side="long", tiers=BTC, **kwargs)
    assert lp is not None
    assert str(lp).startswith("56224.899598393574297188")
    assert bankruptcy_price(side="long", **kwargs) == D(56000)


def test_side_accepts_the_enum_and_rejects_anything_else():
    kwargs = {"entry_price": D(60000), "quantity": D("0.01"), "collateral": D("4.8")}
    assert liquidation_price(side=margin.Side.LONG, tiers=BTC, **kwargs) == liquidation_price(
        side="long", tiers=BTC, **kwargs
    )
    with pytest.raises(ValueError, match="side"):
        liquidation_price(side="buy", tiers=BTC, **kwargs)


# --- Binance BTCUSDT brackets ---------------------------------------------------------


def test_btcusdt_maintenance_amounts_are_derived():
    assert [t.cum for t in BTC] == [D(0), D(50), D(950), D(11450), D(131450)]
    assert [t.max_leverage for t in BTC] == [125, 100, 75, 50, 25]


@pytest.mark.parametrize(
    ("notional", "expected"),
    [
        (D(0), D(0)),
        (D(10_000), D(40)),  # 0.4%
        (D(50_000), D(200)),  # edge: 0.5% * 50k - 50 = 0.4% * 50k
        (D(100_000), D(450)),
        (D(600_000), D(2950)),  # 0.65% * 600k - 950 = 0.5% * 600k - 50
        (D(3_000_000), D(18550)),
        (D(12_000_000), D(108550)),
        (D(70_000_000), D(1268550)),
        (D(100_000_000), D(1868550)),  # beyond the last cap: the last bracket continues
    ],
)
def test_btcusdt_maintenance_margin(notional, expected):
    assert maintenance_margin(notional=notional, tiers=BTC) == expected


@pytest.mark.parametrize(
    ("side", "quantity", "entry", "collateral", "tier_index", "lp_prefix"),
    [
        # 10 BTC long at 60,000 (600k, bracket 3 at entry): LP notional falls to bracket 2.
        ("long", D(10), D(60000), D(60000), 1, "54266.331658291457286432"),
        # 10 BTC short at 58,000 (580k, bracket 2 at entry): LP notional rises into bracket 3.
        ("short", D(10), D(58000), D(58000), 2, "63482.364629905613512170"),
        # 100 BTC long at 60,000, 20x (6M): stays in bracket 4.
        ("long", D(100), D(60000), D(300000), 3, "57460.101010101010101010"),
        # 1,000 BTC short at 60,000, 20x (60M): bracket 5.
        ("short", D(1000), D(60000), D(3000000), 4, "61893.578431372549019607"),
        # 2,000 BTC short at 60,000, 10x: beyond the last cap, the last bracket applies.
        ("short", D(2000), D(60000), D(12000000), 4, "64770.318627450980392156"),
        # 1,000 BTC long at 60,000, 5x (60M at entry): LP notional stays in bracket 5.
        ("long", D(1000), D(60000), D(12000000), 4, "48845.459183673469387755"),
        # 100,000 BTC long at 60,000, 5x (6B): far beyond the last cap, whose bracket applies.
        ("long", D(100000), D(60000), D(1200000000), 4, "48978.250510204081632653"),
    ],
)
def test_large_positions_take_the_bracket_at_the_liquidation_price(
    side, quantity, entry, collateral, tier_index, lp_prefix
):
    lp = liquidation_price(
        side=side, entry_price=entry, quantity=quantity, collateral=collateral, tiers=BTC
    )
    assert lp is not None
    assert str(lp).startswith(lp_prefix)
    tier = BTC[tier_index]
    assert margin.tier_for_notional(notional=quantity * lp, tiers=BTC) == tier
    s = 1 if side == "long" else -1
    with localcontext() as ctx:
        ctx.prec = 40
        formula = (collateral + tier.cum - s * quantity * entry) / (
            quantity * tier.mmr - s * quantity
        )
    assert lp == formula
    mb = margin_balance(
        side=side, entry_price=entry, quantity=quantity, collateral=collateral, mark_price=lp
    )
    assert abs(mb - maintenance_margin(notional=mul40(quantity, lp), tiers=BTC)) < D("1e-20")


def test_a_long_without_leverage_is_never_liquidated():
    assert (
        liquidation_price(
            side="long", entry_price=D(60000), quantity=D(1), collateral=D(60000), tiers=BTC
        )
        is None
    )
    # A short at 1x still has a liquidation price: the price can rise without limit.
    lp = liquidation_price(
        side="short", entry_price=D(60000), quantity=D(1), collateral=D(60000), tiers=BTC
    )
    assert lp is not None
    assert lp > D(119000)


def test_unrealized_pnl_and_margin_ratio():
    kwargs = {"entry_price": D(60000), "quantity": D("0.5")}
    assert unrealized_pnl(side="long", mark_price=D(59000), **kwargs) == D(-500)
    assert unrealized_pnl(side="short", mark_price=D(59000), **kwargs) == D(500)
    # MM at 59,000 * 0.5 = 29,500 notional: 118; MB = 1500 - 500 = 1000.
    ratio = margin_ratio(side="long", collateral=D(1500), mark_price=D(59000), tiers=BTC, **kwargs)
    assert ratio == D("0.118")
    # Bankrupt: no ratio.
    assert (
        margin_ratio(side="long", collateral=D(1500), mark_price=D(57000), tiers=BTC, **kwargs)
        is None
    )


def test_initial_margin_rejects_non_positive_leverage():
    with pytest.raises(ValueError, match="leverage"):
        initial_margin(entry_price=D(1), quantity=D(1), leverage=0)


def test_prices_reject_non_positive_quantity():
    with pytest.raises(ValueError, match="quantity"):
        liquidation_price(side="long", entry_price=D(1), quantity=D(0), collateral=D(1), tiers=BTC)
    with pytest.raises(ValueError, match="quantity"):
        bankruptcy_price(side="long", entry_price=D(1), quantity=D(-1), collateral=D(1))


# --- tiers_from_table validation ------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "at least one tier"),
        ([(D(10), None, D("0.01"), 10)], "start at a notional of 0"),
        ([(D(0), None, D("0.01"), 10), (D(100), None, D("0.02"), 5)], "only the last tier"),
        ([(D(0), D(0), D("0.01"), 10)], "end above its floor"),
        ([(D(0), D(100), D("0.01"), 10), (D(200), None, D("0.02"), 5)], "followed by a tier"),
        ([(D(0), None, D(0), 10)], "strictly between 0 and 1"),
        ([(D(0), None, D(1), 1)], "strictly between 0 and 1"),
        ([(D(0), D(100), D("0.02"), 10), (D(100), None, D("0.01"), 5)], "must not decrease"),
        ([(D(0), None, D("0.01"), 0)], "at least 1"),
        ([(D(0), D(100), D("0.01"), 10), (D(100), None, D("0.02"), 20)], "must not increase"),
        ([(D(0), None, D("0.01"), 100)], "below its initial margin rate"),
    ],
)
def test_tiers_from_table_rejects_bad_tables(rows, message):
    with pytest.raises(ValueError, match=message):
        tiers_from_table(rows)


def test_tiers_from_table_sorts_rows_and_accepts_strings():
    rows = [(row[0], row[1], str(row[2]), row[3]) for row in reversed(BTC_BRACKETS)]
    assert tiers_from_table(rows) == BTC
    assert isinstance(BTC[0], Tier)


# --- properties -----------------------------------------------------------------------

MMRS = [D("0.001"), D("0.004"), D("0.005"), D("0.0065"), D("0.01"), D("0.02"), D("0.05")]


@st.composite
def tier_tables(draw):
    """A valid bracket table: contiguous floors, rising rates, falling leverage caps."""
    count = draw(st.integers(1, 6))
    floors = [
        D(0),
        *sorted(draw(st.sets(st.integers(1, 10**8), min_size=count - 1, max_size=count - 1))),
    ]
    floors = [D(f) for f in floors]
    rates = sorted(draw(st.lists(st.sampled_from(MMRS), min_size=count, max_size=count)))
    rows = []
    cap_lev = 125
    for index, (floor, rate) in enumerate(zip(floors, rates, strict=True)):
        ceiling = min(cap_lev, int((1 - D("1e-9")) / rate))
        while rate * ceiling >= 1:
            ceiling -= 1
        lev = draw(st.integers(1, ceiling))
        cap_lev = lev
        cap = floors[index + 1] if index + 1 < count else draw(st.sampled_from([None, D(10**9)]))
        rows.append((floor, cap, rate, lev))
    return tiers_from_table(rows)


quantities = st.integers(1, 10**7).map(lambda n: D(n) / 1000)  # 0.001 .. 10,000
prices = st.integers(1, 10**8).map(lambda n: D(n) / 10)  # 0.1 .. 10,000,000


@st.composite
def positions(draw, tiers=None):
    """(side, entry, quantity, collateral, tiers): opened within the bracket's leverage cap."""
    table = tiers if tiers is not None else draw(st.one_of(st.just(BTC), tier_tables()))
    side = draw(st.sampled_from(["long", "short"]))
    entry = draw(prices)
    quantity = draw(quantities)
    cap = margin.max_leverage_for_notional(notional=quantity * entry, tiers=table)
    leverage = draw(st.integers(1, cap))
    extra = draw(st.one_of(st.just(D(0)), st.integers(1, 10**6).map(D)))
    collateral = initial_margin(entry_price=entry, quantity=quantity, leverage=leverage) + extra
    return side, entry, quantity, collateral, table


def _other(side: str) -> str:
    return "short" if side == "long" else "long"


@PURE
@given(positions(), prices)
def test_pnl_and_bankruptcy_are_mirror_images(pos, mark):
    side, entry, quantity, collateral, _ = pos
    assert unrealized_pnl(
        side=side, entry_price=entry, quantity=quantity, mark_price=mark
    ) == -unrealized_pnl(side=_other(side), entry_price=entry, quantity=quantity, mark_price=mark)
    long_bp = bankruptcy_price(
        side="long", entry_price=entry, quantity=quantity, collateral=collateral
    )
    short_bp = bankruptcy_price(
        side="short", entry_price=entry, quantity=quantity, collateral=collateral
    )
    assert entry - long_bp == short_bp - entry


@PURE
@given(positions())
def test_long_and_short_liquidation_prices_are_symmetric(pos):
    """Both sides liquidate once the adverse move eats collateral down to MM(N(LP)).

    MM grows with the notional, which is higher at a short's LP than a long's, so the short's
    distance to liquidation is never the larger one.
    """
    _, entry, quantity, collateral, tiers = pos
    kw = {"entry_price": entry, "quantity": quantity, "collateral": collateral, "tiers": tiers}
    long_lp = liquidation_price(side="long", **kw)
    short_lp = liquidation_price(side="short", **kw)
    assert short_lp is not None
    tolerance = D("1e-25") * (1 + collateral + quantity * entry)
    with localcontext() as ctx:
        ctx.prec = 40
        short_move = quantity * (short_lp - entry)
        short_mm = maintenance_margin(notional=mul40(quantity, short_lp), tiers=tiers)
        assert abs(short_move - (collateral - short_mm)) <= tolerance
        if long_lp is not None:
            long_move = quantity * (entry - long_lp)
            long_mm = maintenance_margin(notional=mul40(quantity, long_lp), tiers=tiers)
            assert abs(long_move - (collateral - long_mm)) <= tolerance
            assert long_move >= short_move - tolerance


@PURE
@given(positions())
def test_bankruptcy_liquidation_and_entry_are_ordered(pos):
    side, entry, quantity, collateral, tiers = pos
    kw = {"entry_price": entry, "quantity": quantity, "collateral": collateral}
    lp = liquidation_price(side=side, tiers=tiers, **kw)
    bp = bankruptcy_price(side=side, **kw)
    if side == "long":
        if lp is None:
            assert bp <= 0  # a bankruptcy price above 0 would have a liquidation price above it
        else:
            assert bp < lp < entry
    else:
        assert lp is not None
        assert entry < lp < bp


@PURE
@given(positions())
def test_the_margin_test_flips_exactly_at_the_liquidation_price(pos):
    side, entry, quantity, collateral, tiers = pos
    kw = {"entry_price": entry, "quantity": quantity, "collateral": collateral}
    lp = liquidation_price(side=side, tiers=tiers, **kw)
    assume(lp is not None)
    assert lp is not None
    mb = margin_balance(side=side, mark_price=lp, **kw)
    mm = maintenance_margin(notional=mul40(quantity, lp), tiers=tiers)
    assert abs(mb - mm) <= D("1e-25") * (1 + collateral + quantity * entry)
    step = D("1e-9")
    past, before = (lp - step, lp + step) if side == "long" else (lp + step, lp - step)
    assert is_liquidatable(side=side, mark_price=past, tiers=tiers, **kw)
    assert not is_liquidatable(side=side, mark_price=before, tiers=tiers, **kw)
    ratio = margin_ratio(side=side, mark_price=before, tiers=tiers, **kw)
    assert ratio is not None
    assert ratio < 1


@PURE
@given(positions(), st.integers(1, 10**6).map(D))
def test_adding_collateral_moves_the_liquidation_price_away_from_the_mark(pos, added):
    side, entry, quantity, collateral, tiers = pos
    kw = {"side": side, "entry_price": entry, "quantity": quantity, "tiers": tiers}
    before = liquidation_price(collateral=collateral, **kw)
    after = liquidation_price(collateral=collateral + added, **kw)
    if side == "long":
        assert before is None or after is None or after < before
        assert not (before is None and after is not None)
    else:
        assert before is not None
        assert after is not None
        assert after > before


@PURE
@given(tier_tables())
def test_maintenance_margin_is_continuous_at_every_bracket_edge(tiers):
    for below, above in itertools.pairwise(tiers):
        edge = above.notional_floor
        assert below.notional_cap == edge
        with localcontext() as ctx:
            ctx.prec = 40
            from_below = edge * below.mmr - below.cum
        assert maintenance_margin(notional=edge, tiers=tiers) == from_below
        # Just under the edge the lower bracket applies and MM differs by at most the slope.
        just_under = maintenance_margin(notional=edge - D("0.0001"), tiers=tiers)
        assert 0 <= from_below - just_under <= D("0.0001") * below.mmr


@PURE
@given(tier_tables(), st.integers(0, 2 * 10**9).map(D), st.integers(0, 2 * 10**9).map(D))
def test_maintenance_margin_never_decreases_with_notional(tiers, a, b):
    low, high = sorted([a, b])
    assert maintenance_margin(notional=low, tiers=tiers) <= maintenance_margin(
        notional=high, tiers=tiers
    )
