"""Fixtures of the learner pages: a signed-in student, an outsider and a simulated liquidation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from accounts.ledger import Leg
from accounts.models import LedgerEntry, LedgerTransaction
from liquidation.models import LiquidationEvent, MarginCall, PriceTick
from positions.models import Collateral, Position
from positions.services import position_ledger_post, position_open

PASSWORD = "ringfence-test"


@pytest.fixture
def alice_client(client, account):
    client.login(username="alice", password=PASSWORD)
    return client


@pytest.fixture
def bob_client(client, other_account):
    client.login(username="bob", password=PASSWORD)
    return client


@pytest.fixture
def position(account, btc):
    return position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )


def simulate_liquidation(position: Position, mark: Decimal) -> LiquidationEvent:
    """What the engine does to a breached position, written here until the engine is merged:
    the collateral goes to the insurance fund and the position closes at the mark."""
    with transaction.atomic():
        collateral = Collateral.objects.get(pk=position.pk)
        account = position.account
        account.refresh_from_db()
        tx = position_ledger_post(
            classroom_id=account.classroom_id,
            kind=LedgerTransaction.Kind.LIQUIDATION,
            position_id=position.pk,
            memo=f"Liquidation of position #{position.pk}",
            legs=[
                Leg(
                    LedgerEntry.Pocket.COLLATERAL,
                    -collateral.amount,
                    account_id=account.pk,
                    position_id=position.pk,
                ),
                Leg(LedgerEntry.Pocket.HOUSE, collateral.amount),
            ],
        )
        now = timezone.now()
        MarginCall.objects.create(
            position=position,
            classroom_id=account.classroom_id,
            mark_price=mark,
            margin_ratio=Decimal("0.9"),
            outcome=MarginCall.Outcome.LIQUIDATED,
        )
        event = LiquidationEvent.objects.create(
            position=position,
            classroom_id=account.classroom_id,
            quantity=position.quantity,
            mark_price=mark,
            liquidation_price=position.liquidation_price,
            bankruptcy_price=position.bankruptcy_price,
            collateral_lost=collateral.amount,
            free_balance_before=account.balance,
            ledger_transaction_id=tx.pk,
            created_at=now,
        )
        Position.objects.filter(pk=position.pk).update(
            status=Position.Status.LIQUIDATED,
            closed_at=now,
            exit_price=mark,
            realized_pnl=-collateral.amount,
        )
        PriceTick.objects.create(instrument=position.instrument, price=mark, created_at=now)
    return event
