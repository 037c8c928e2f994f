"""Replacing a resting order: a new quantity, limit price or stop price in one transaction.

The old order is cancelled (its hold back in the free balance) and a new one with its other
terms is placed, as an exchange amends an order; a new order the rules refuse leaves the old
one resting as it was.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.errors import DomainError
from accounts.models import LedgerTransaction
from positions.models import Order
from positions.services import order_replace, position_open
from tests.core.test_order_margin import balance, place
from tests.invariants import assert_ledger_invariants, money_snapshot

D = Decimal
Kind = LedgerTransaction.Kind


def test_a_new_limit_price_cancels_the_old_order_and_holds_at_the_new_price(account, btc):
    old = place(account, btc, type="limit", price="59000", take_profit="65000", client_order_id="a")
    new = order_replace(order_id=old.pk, price="58000", client_order_id="b")
    # 0.1 x 58,000 / 10 = 580 margin + 2.90 fee.
    assert (new.status, new.price, new.held_margin) == ("resting", D(58000), D("582.9"))
    assert (new.replaces_id, new.client_order_id) == (old.pk, "b")
    # Every other term is the old order's.
    same = ("side", "type", "quantity", "leverage", "take_profit", "stop_loss", "instrument_id")
    assert [getattr(new, f) for f in same] == [getattr(old, f) for f in same]
    old.refresh_from_db()
    assert (old.status, old.held_margin) == ("cancelled", 0)
    assert old.reject_reason == f"Replaced by order #{new.pk}"
    assert balance(account) == D(10000) - D("582.9")
    releases = LedgerTransaction.objects.filter(kind=Kind.ORDER_RELEASE)
    assert [t.description for t in releases] == [
        f"Release 592.95 held by order #{old.pk} (replaced)"
    ]
    assert_ledger_invariants()


def test_a_new_quantity_holds_for_the_new_quantity(account, btc):
    old = place(account, btc, side="short", type="stop", stop_price="58000")
    new = order_replace(order_id=old.pk, quantity="0.3")
    # 0.3 x 58,000 / 10 = 1,740 margin + 8.70 fee.
    assert (new.quantity, new.stop_price, new.held_margin) == (D("0.3"), D(58000), D("1748.7"))
    assert balance(account) == D(10000) - D("1748.7")
    assert_ledger_invariants()


def test_a_new_price_the_market_has_reached_fills_at_once(account, btc):
    old = place(account, btc, type="limit", price="59000")
    # A buy limited at 61,000 while the mark is 60,000.
    new = order_replace(order_id=old.pk, price="61000")
    assert (new.status, new.held_margin) == ("filled", 0)
    assert new.position is not None and new.position.entry_price == D(60000)
    assert_ledger_invariants()


def test_a_refused_replacement_leaves_the_old_order_resting_with_its_hold(account, btc):
    old = place(account, btc, type="limit", price="59000", take_profit="59500")
    before = money_snapshot()
    for terms, code in (
        ({"quantity": "5"}, "insufficient_balance"),  # 5 BTC at 10x needs 29,500
        ({"price": "59600"}, "invalid_price"),  # its own take-profit would lie below it
        ({"quantity": "0.0001"}, "invalid_quantity"),  # not a multiple of the lot
        ({"stop_price": "58000"}, "invalid_request"),  # a limit order has no stop price
        ({}, "invalid_order"),
    ):
        with pytest.raises(DomainError) as refused:
            order_replace(order_id=old.pk, **terms)
        assert refused.value.code == code, terms
        assert money_snapshot() == before, terms
    old.refresh_from_db()
    assert (old.status, old.held_margin) == ("resting", D("592.95"))
    assert_ledger_invariants()


def test_only_a_resting_order_can_be_replaced_and_the_refusal_names_its_successor(account, btc):
    old = place(account, btc, type="limit", price="59000")
    new = order_replace(order_id=old.pk, price="58000")
    with pytest.raises(DomainError, match=f"was replaced by order #{new.pk}") as refused:
        order_replace(order_id=old.pk, price="57000")
    assert refused.value.code == "order_not_cancellable"
    filled = place(account, btc)  # market
    with pytest.raises(DomainError, match="The order is filled"):
        order_replace(order_id=filled.pk, quantity="0.2")


def test_a_retried_replacement_replaces_once(account, btc):
    old = place(account, btc, type="limit", price="59000")
    first = order_replace(order_id=old.pk, price="58000", client_order_id="move-1")
    again = order_replace(order_id=old.pk, price="58000", client_order_id="move-1")
    assert again.pk == first.pk and getattr(again, "repeated", False)
    assert Order.objects.filter(account=account).count() == 2
    with pytest.raises(DomainError, match="has another price, 58000") as refused:
        order_replace(order_id=old.pk, price="57000", client_order_id="move-1")
    assert refused.value.code == "client_order_id_reused"
    with pytest.raises(DomainError, match="is the order being replaced"):
        order_replace(order_id=first.pk, price="57000", client_order_id="move-1")
    other = place(account, btc, type="limit", price="50000", client_order_id="other")
    with pytest.raises(DomainError, match=f"is not a replacement of order #{first.pk}"):
        order_replace(order_id=first.pk, price="57000", client_order_id="other")
    assert Order.objects.get(pk=other.pk).status == "resting"
    assert_ledger_invariants()


def test_a_reduce_only_order_is_replaced_within_its_position(account, btc):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    old = place(
        account, btc, side="short", type="limit", price="61000", quantity="0.5",
        reduce_only=True, position_id=position.pk,
    )  # fmt: skip
    new = order_replace(order_id=old.pk, price="62000", quantity="0.2")
    assert (new.reduce_only, new.position_id, new.held_margin) == (True, position.pk, 0)
    assert (new.price, new.quantity) == (D(62000), D("0.2"))
    with pytest.raises(DomainError, match=r"Only 0\.5 is open"):
        order_replace(order_id=new.pk, quantity="0.6")
    assert Order.objects.get(pk=new.pk).status == "resting"
    assert_ledger_invariants()
