from decimal import Decimal

from positions.models import Position
from positions.services import position_close, position_open
from tests.invariants import assert_ledger_invariants


def test_open_and_close_round_trip_keeps_the_ledger_balanced(account, btc):
    account.classroom.max_leverage = 125
    account.classroom.save()
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01", leverage=125
    )
    assert position.collateral.amount == Decimal("4.8")
    assert position.liquidation_price == Decimal("59759.0361445784")
    assert position.bankruptcy_price == Decimal("59520")
    account.refresh_from_db()
    assert account.balance == Decimal("10000") - Decimal("4.8") - Decimal("0.3")
    position_close(position_id=position.pk)
    position.refresh_from_db()
    assert position.status == Position.Status.CLOSED
    assert_ledger_invariants()


def test_account_overview_counts_collateral_and_caps_losses(account, btc):
    from positions.selectors import account_overview

    position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    btc.mark_price = Decimal("30000")  # far past the liquidation price: loss capped at collateral
    btc.save()
    account.refresh_from_db()
    overview = account_overview(account)
    assert overview.collateral_locked == Decimal("600")
    assert overview.unrealized_pnl == Decimal("-600")
    assert overview.equity == account.balance
