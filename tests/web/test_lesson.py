"""The isolation lesson and leaderboard arithmetic: pure, no database."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from liquidation.performance import max_drawdown, ranking_score
from positions.margin import tiers_from_table
from tests.factories import BTC_BRACKETS
from web.lesson import collateral_to_survive, isolation_lesson, survives

TIERS = tiers_from_table(BTC_BRACKETS)
D = Decimal


def test_a_20x_long_liquidated_by_a_30_percent_fall_loses_only_its_collateral():
    # 0.5 BTC at 60,000 with 20x: collateral 1,500; the rest of the account 8,485.
    lesson = isolation_lesson(
        side="long",
        entry_price=D(60000),
        quantity=D("0.5"),
        collateral=D(1500),
        free_balance=D(8485),
        worst_price=D(42000),
        tiers=TIERS,
        liquidated=True,
        liquidation_mark=D(57000),
        worst_after_liquidation=D(42000),
    )
    assert lesson.isolated_loss == D(1500)
    assert lesson.free_balance_before == lesson.free_balance_after == D(8485)
    # Cross margin: 9,985 backs the trade; at 42,000 the loss is 9,000, MB 985 > MM 84.
    assert lesson.cross.account_collateral == D(9985)
    assert lesson.cross.survived is True
    assert lesson.cross.loss_at_worst == D(9000)
    assert lesson.cross.consumed == D(9000)
    assert lesson.cross.consumed_pct == D("90.13520280")
    # To survive 42,000 in isolation: MM 84 + loss 9,000, one money step above.
    assert lesson.extra_collateral_needed == D("7584.00000001")
    assert lesson.move_after_liquidation_pct == D("26.31578947")


def test_cross_margin_that_cannot_survive_consumes_the_whole_account():
    lesson = isolation_lesson(
        side="long",
        entry_price=D(60000),
        quantity=D("0.5"),
        collateral=D(1500),
        free_balance=D(5000),
        worst_price=D(47000),
        tiers=TIERS,
        liquidated=True,
        liquidation_mark=D(57300),
        worst_after_liquidation=D(47000),
    )
    assert lesson.cross.survived is False
    assert lesson.cross.consumed == D(6500)
    assert lesson.cross.consumed_pct == D(100)
    assert lesson.isolated_loss == D(1500)


def test_a_short_mirrors_a_long():
    lesson = isolation_lesson(
        side="short",
        entry_price=D(60000),
        quantity=D("0.5"),
        collateral=D(1500),
        free_balance=D(8485),
        worst_price=D(78000),
        tiers=TIERS,
        liquidated=True,
        liquidation_mark=D(62800),
        worst_after_liquidation=D(78000),
    )
    assert lesson.cross.loss_at_worst == D(9000)
    # MM at 78,000 is 39,000 * 0.004 = 156; MB 985 > 156.
    assert lesson.cross.survived is True
    assert lesson.extra_collateral_needed == D("7656.00000001")
    assert lesson.move_after_liquidation_pct == D("24.20382166")


def test_a_losing_open_position_loses_at_most_its_collateral_so_far():
    lesson = isolation_lesson(
        side="long",
        entry_price=D(60000),
        quantity=D("0.5"),
        collateral=D(1500),
        free_balance=D(8485),
        worst_price=D(59000),
        tiers=TIERS,
    )
    assert lesson.isolated_loss == D(500)
    assert lesson.extra_collateral_needed == D(0)
    assert lesson.move_after_liquidation_pct is None


@given(
    side=st.sampled_from(["long", "short"]),
    quantity=st.decimals(min_value=D("0.001"), max_value=D(50), places=3),
    move=st.decimals(min_value=D("-0.9"), max_value=D("0.9"), places=4),
)
def test_the_smallest_surviving_collateral_survives_and_one_step_less_does_not(
    side, quantity, move
):
    entry = D(60000)
    worst = entry * (1 + move)
    needed = collateral_to_survive(
        side=side, entry_price=entry, quantity=quantity, price=worst, tiers=TIERS
    )
    kwargs = {
        "side": side,
        "entry_price": entry,
        "quantity": quantity,
        "price": worst,
        "tiers": TIERS,
    }
    assert survives(collateral=needed, **kwargs)
    if needed > 0:
        assert not survives(collateral=needed - D("0.00000001"), **kwargs)


def test_max_drawdown_is_the_largest_fall_from_a_running_peak():
    assert max_drawdown([D(100), D(120), D(60), D(130), D(97.5)]).pct == D(50)
    assert max_drawdown([D(100), D(120), D(60), D(130), D(97.5)]).amount == D(60)
    assert max_drawdown([D(100), D(110), D(120)]).pct == D(0)
    assert max_drawdown([]).amount == D(0)


def test_risk_adjusted_score_divides_return_by_drawdown_but_never_by_less_than_one_percent():
    assert ranking_score(return_pct=D(20), drawdown_pct=D(10), risk_adjusted=True) == D(2)
    assert ranking_score(return_pct=D(20), drawdown_pct=D(0), risk_adjusted=True) == D(20)
    assert ranking_score(return_pct=D(20), drawdown_pct=D(10), risk_adjusted=False) == D(20)
    assert ranking_score(return_pct=None, drawdown_pct=D(10), risk_adjusted=False) == D(0)
