"""The floor of a position's loss moment by moment (web.loss_floor), without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from web.loss_floor import Change, Holdings

D = Decimal
OPENED = datetime(2026, 11, 26, 14, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return OPENED + timedelta(seconds=seconds)


def test_the_floor_is_what_was_realised_minus_the_collateral_held_then():
    holdings = Holdings(
        opened_at=OPENED,
        quantity=D("0.5"),
        collateral=D(1500),
        changes=[
            Change(at(25), collateral=D(-500)),  # given out of order: sorted by time
            Change(at(5), collateral=D(1000)),
            Change(at(15), closed=D("0.2"), realised=D(-200), collateral=D(-1000)),
        ],
    )
    assert [(h.at, h.quantity, h.floor) for h in holdings.steps] == [
        (at(0), D("0.5"), D(-1500)),
        (at(5), D("0.5"), D(-2500)),
        (at(15), D("0.3"), D(-1700)),
        (at(25), D("0.3"), D(-1200)),
    ]
    assert holdings.at(at(-3)).floor == D(-1500)  # before the opening: what it opened with
    assert holdings.at(at(14)).floor == D(-2500)
    assert holdings.at(at(15)).floor == D(-1700)
    assert holdings.times(at(1), at(20)) == [at(5), at(15)]
    # A mark 4,000 under the entry would lose 1,200 on the 0.3: fenced at the floor.
    assert holdings.at(at(30)).fenced(D("0.3") * D(-4000)) == D(-1200)
    assert holdings.at(at(30)).fenced(D("0.3") * D(-1000)) == D(-500)


def test_changes_at_one_instant_make_one_step():
    holdings = Holdings(
        opened_at=OPENED,
        quantity=D(1),
        collateral=D(100),
        changes=[Change(at(5), collateral=D(50)), Change(at(5), collateral=D(-30))],
    )
    assert [(h.at, h.collateral) for h in holdings.steps] == [(at(0), D(100)), (at(5), D(120))]


@given(
    collateral=st.decimals(min_value=D("0.01"), max_value=D(10**6), places=2),
    share=st.fractions(min_value=0, max_value=1),
    pnl=st.decimals(min_value=D(-(10**7)), max_value=D(10**7), places=2),
)
def test_a_close_never_lowers_the_floor(collateral, share, pnl):
    """A close of part of the position releases its share of the collateral and realises a
    PnL the ring-fence keeps at or above minus that share, so the floor can only rise."""
    released = (collateral * D(share.numerator) / D(share.denominator)).quantize(D("0.01"))
    realised = max(pnl, -released)
    holdings = Holdings(
        opened_at=OPENED,
        quantity=D(1),
        collateral=collateral,
        changes=[Change(at(1), closed=D(0), realised=realised, collateral=-released)],
    )
    assert holdings.at(at(1)).floor >= holdings.at(at(0)).floor
