"""A form sent twice (a double click, a retry on a slow network) trades once: the trade ticket
and the close form carry a one-time client_order_id, the margin form a one-time
client_request_id, and the second submit lands where the first one did."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import LedgerTransaction
from liquidation.settlement import breached_position_ids, liquidate_batch
from positions.models import Fill, Instrument, Order, Position
from positions.services import position_add_margin
from tests.invariants import assert_ledger_invariants, money_snapshot

pytestmark = pytest.mark.django_db


def token(page: str, name: str) -> str:
    """The one-time id that a rendered form carries in its hidden field ``name``."""
    found = re.search(rf'<input type="hidden" name="{name}" value="(web-[0-9a-f]{{32}})"', page)
    assert found, f"no {name} in the page"
    return found.group(1)


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def ticket(client, account) -> str:
    return token(
        client.get(reverse("trade", args=[account.pk])).content.decode(), "client_order_id"
    )


def market_long(btc, client_order_id: str, quantity: str = "0.5") -> dict[str, object]:
    """The trade ticket's fields for a market long at 20x, as the page posts them."""
    return {
        "instrument": btc.pk,
        "side": "long",
        "type": "market",
        "quantity": quantity,
        "leverage": "20",
        "client_order_id": client_order_id,
    }


def test_a_trade_ticket_sent_twice_opens_one_position(alice_client, account, btc):
    sent = market_long(btc, ticket(alice_client, account))
    url = reverse("trade", args=[account.pk])
    first = alice_client.post(url, sent, follow=True)
    second = alice_client.post(url, sent, follow=True)
    position = Position.objects.get(account=account)
    assert Order.objects.filter(account=account).count() == 1
    assert Order.objects.get().client_order_id == sent["client_order_id"]
    # Both land on the position page with the same words.
    for response in (first, second):
        assert response.redirect_chain == [(reverse("position", args=[position.pk]), 302)]
        assert shown_messages(response) == [f"Opened position #{position.pk}."]
    assert_ledger_invariants()


def test_a_resting_order_sent_twice_rests_once(alice_client, account, btc):
    sent = {
        "instrument": btc.pk,
        "side": "long",
        "type": "limit",
        "price": "59000",
        "quantity": "0.1",
        "leverage": "10",
        "client_order_id": ticket(alice_client, account),
    }
    url = reverse("trade", args=[account.pk])
    answers = [alice_client.post(url, sent, follow=True) for _ in range(2)]
    order = Order.objects.get(account=account)
    assert order.status == Order.Status.RESTING
    for response in answers:
        assert shown_messages(response) == [f"Order #{order.pk} is resting until it triggers."]


def test_every_ticket_gets_its_own_id_and_a_refused_one_keeps_it(alice_client, account, btc):
    first, second = ticket(alice_client, account), ticket(alice_client, account)
    assert first != second
    url = reverse("trade", args=[account.pk])
    # More than the free balance opens.
    refused = alice_client.post(url, market_long(btc, first, quantity="1000"))
    assert refused.status_code == 400
    assert "your free balance is" in refused.content.decode()
    # Nothing was written, so the ticket shown again may be sent again with its id.
    assert token(refused.content.decode(), "client_order_id") == first
    assert not Order.objects.exists()
    fixed = market_long(btc, first, quantity="0.1")
    alice_client.post(url, fixed)
    assert Order.objects.get().client_order_id == first


def close_form(client, position) -> str:
    page = client.get(reverse("position", args=[position.pk])).content.decode()
    return token(page, "close-client_order_id")


def test_a_partial_close_sent_twice_closes_once(alice_client, position):
    sent = {"close-quantity": "0.2", "close-client_order_id": close_form(alice_client, position)}
    url = reverse("position-close", args=[position.pk])
    first = alice_client.post(url, sent, follow=True)
    before = money_snapshot()
    second = alice_client.post(url, sent, follow=True)
    assert money_snapshot() == before
    position.refresh_from_db()
    assert (position.quantity, position.status) == (Decimal("0.3"), Position.Status.OPEN)
    assert Fill.objects.filter(position=position, kind="close").count() == 1
    words = shown_messages(first)
    assert len(words) == 1 and words[0].startswith("Closed 0.200 of 0.500 BTCUSDT")
    assert shown_messages(second) == words
    # The page shown after the close has a form of its own for the next close.
    assert token(second.content.decode(), "close-client_order_id") != sent["close-client_order_id"]
    assert_ledger_invariants()


def test_a_whole_close_sent_twice_says_what_it_did_both_times(alice_client, position):
    sent = {"close-quantity": "", "close-client_order_id": close_form(alice_client, position)}
    url = reverse("position-close", args=[position.pk])
    first = alice_client.post(url, sent, follow=True)
    second = alice_client.post(url, sent, follow=True)
    assert Fill.objects.filter(position=position, kind="close").count() == 1
    words = shown_messages(first)
    assert len(words) == 1 and words[0].startswith(f"Position #{position.pk} closed at")
    # Not "This position is no longer open": the student sees what their click did.
    assert shown_messages(second) == words
    assert_ledger_invariants()


def test_a_close_form_sent_again_with_another_quantity_closes_nothing_more(alice_client, position):
    once = close_form(alice_client, position)
    url = reverse("position-close", args=[position.pk])
    alice_client.post(url, {"close-quantity": "0.2", "close-client_order_id": once}, follow=True)
    before = money_snapshot()
    changed = alice_client.post(
        url, {"close-quantity": "0.1", "close-client_order_id": once}, follow=True
    )
    assert money_snapshot() == before
    assert changed.redirect_chain == [(reverse("position", args=[position.pk]), 302)]
    assert shown_messages(changed) == [
        "This form was already sent with other values, and that first submit was carried out; "
        "nothing more was done. Check the position before trying again."
    ]
    position.refresh_from_db()
    assert position.quantity == Decimal("0.3")


def test_a_tampered_one_time_id_is_refused_above_the_form(alice_client, account, btc, position):
    before = money_snapshot()
    too_long = "x" * 65
    ticket_sent = alice_client.post(
        reverse("trade", args=[account.pk]),
        market_long(btc, too_long, quantity="0.1"),
    )
    close_sent = alice_client.post(
        reverse("position-close", args=[position.pk]),
        {"close-quantity": "0.1", "close-client_order_id": too_long},
    )
    for response in (ticket_sent, close_sent):
        assert response.status_code == 400
        errors = response.content.decode().split('class="form-errors"', 1)[1].split("</div>")[0]
        assert "client_order_id is at most 64 characters." in errors
    assert money_snapshot() == before


def test_a_partial_close_sent_again_after_another_close_says_what_it_did(alice_client, position):
    url = reverse("position-close", args=[position.pk])
    first = {"close-quantity": "0.2", "close-client_order_id": close_form(alice_client, position)}
    words = shown_messages(alice_client.post(url, first, follow=True))
    assert words[0].startswith("Closed 0.200 of 0.500 BTCUSDT") and words[0].endswith(
        f"0.300 stays open in position #{position.pk}."
    )
    other = {"close-quantity": "0.1", "close-client_order_id": close_form(alice_client, position)}
    alice_client.post(url, other, follow=True)
    before = money_snapshot()
    again = shown_messages(alice_client.post(url, first, follow=True))
    assert money_snapshot() == before
    # What the first submit did, not sums of the position as it is now.
    assert len(again) == 1 and again[0].startswith("Closed 0.200 of 0.500 BTCUSDT")
    assert again[0].endswith(f"0.300 was left open in position #{position.pk}.")


def test_a_partial_close_sent_again_after_a_liquidation_does_not_say_it_closed(
    alice_client, position, btc
):
    url = reverse("position-close", args=[position.pk])
    first = {"close-quantity": "0.2", "close-client_order_id": close_form(alice_client, position)}
    alice_client.post(url, first, follow=True)
    position.refresh_from_db()
    mark = position.liquidation_price - 1
    Instrument.objects.filter(pk=btc.pk).update(mark_price=mark)
    btc.refresh_from_db()
    liquidate_batch(instrument=btc, mark=mark, rows=breached_position_ids(btc.pk, mark))
    position.refresh_from_db()
    assert position.status == Position.Status.LIQUIDATED
    again = shown_messages(alice_client.post(url, first, follow=True))
    assert len(again) == 1 and again[0].startswith("Closed 0.200 of 0.500 BTCUSDT")
    assert again[0].endswith(f"0.300 was left open in position #{position.pk}.")
    assert_ledger_invariants()


def test_a_ticket_sent_again_with_other_values_places_nothing_and_says_so(
    alice_client, account, btc
):
    """The student changed the ticket while its first submit was on its way (a stopped page,
    a slow answer): the first order stands, and the page does not claim the changed one."""
    sent = market_long(btc, ticket(alice_client, account))
    url = reverse("trade", args=[account.pk])
    alice_client.post(url, sent, follow=True)
    position = Position.objects.get(account=account)
    before = money_snapshot()
    changed = alice_client.post(url, {**sent, "quantity": "0.2"}, follow=True)
    assert money_snapshot() == before
    assert Order.objects.filter(account=account).count() == 1
    assert changed.redirect_chain == [(reverse("position", args=[position.pk]), 302)]
    assert shown_messages(changed) == [
        "This ticket was already sent with other values, and that first order was carried "
        "out; nothing more was done. Check it before trying again."
    ]


@pytest.mark.parametrize("type", ["market", "limit"])
def test_a_full_ticket_sent_twice_is_still_the_same_order(alice_client, account, btc, type):
    sent = {
        "instrument": btc.pk,
        "side": "long",
        "type": type,
        **({"price": "59000"} if type == "limit" else {}),
        "notional": "6000",
        "leverage": "20",
        "extra_collateral": "50",
        "take_profit": "66000",
        "stop_loss": "58500",
        "client_order_id": ticket(alice_client, account),
    }
    url = reverse("trade", args=[account.pk])
    first, second = (alice_client.post(url, sent, follow=True) for _ in range(2))
    order = Order.objects.get(account=account)
    assert shown_messages(second) == shown_messages(first)
    assert shown_messages(first)[0] in (
        f"Opened position #{order.position_id}.",
        f"Order #{order.pk} is resting until it triggers.",
    )


def margin_form(client, position) -> str:
    page = client.get(reverse("position", args=[position.pk])).content.decode()
    return token(page, "margin-client_request_id")


@pytest.mark.parametrize(
    ("action", "collateral", "message"),
    [
        ("add", Decimal(1900), "Added 100.00 to the collateral of position #{pk}"),
        ("remove", Decimal(1700), "Removed 100.00 from the collateral of position #{pk}"),
    ],
)
def test_a_margin_form_sent_twice_moves_the_margin_once(
    alice_client, position, action, collateral, message
):
    position_add_margin(position_id=position.pk, amount="300")  # some to remove
    sent = {
        "margin-action": action,
        "margin-amount": "100",
        "margin-client_request_id": margin_form(alice_client, position),
    }
    url = reverse("position-margin", args=[position.pk])
    first = alice_client.post(url, sent, follow=True)
    before = money_snapshot()
    second = alice_client.post(url, sent, follow=True)
    assert money_snapshot() == before
    position.refresh_from_db()
    assert position.collateral.amount == collateral
    stored = LedgerTransaction.objects.filter(client_request_id=sent["margin-client_request_id"])
    assert list(stored.values_list("kind", flat=True)) == [f"{action}_margin"]
    assert shown_messages(first)[0].startswith(message.format(pk=position.pk))
    done = "added to" if action == "add" else "removed from"
    [again] = shown_messages(second)
    assert again.startswith(
        f"This form was already sent: 100.00 was {done} the collateral of position "
        f"#{position.pk} once, and nothing more was moved (now {collateral:,.2f} USDT; "
        "liquidation price now "
    )
    # The page shown after it has a form of its own for the next change.
    assert (
        token(second.content.decode(), "margin-client_request_id")
        != sent["margin-client_request_id"]
    )
    assert_ledger_invariants()


def test_a_margin_form_sent_again_after_a_close_moves_nothing(alice_client, position):
    sent = {
        "margin-action": "add",
        "margin-amount": "100",
        "margin-client_request_id": margin_form(alice_client, position),
    }
    url = reverse("position-margin", args=[position.pk])
    alice_client.post(url, sent, follow=True)
    alice_client.post(
        reverse("position-close", args=[position.pk]), {"close-quantity": ""}, follow=True
    )
    before = money_snapshot()
    late = alice_client.post(url, sent, follow=True)
    assert money_snapshot() == before
    assert shown_messages(late) == [
        f"This form was already sent: 100.00 was added to the collateral of position "
        f"#{position.pk} once, and nothing more was moved."
    ]


def test_a_margin_form_sent_again_with_another_amount_moves_nothing_more(alice_client, position):
    once = margin_form(alice_client, position)
    url = reverse("position-margin", args=[position.pk])
    sent = {"margin-action": "add", "margin-amount": "100", "margin-client_request_id": once}
    alice_client.post(url, sent, follow=True)
    before = money_snapshot()
    changed = alice_client.post(url, {**sent, "margin-amount": "200"}, follow=True)
    assert money_snapshot() == before
    assert changed.redirect_chain == [(reverse("position", args=[position.pk]), 302)]
    assert shown_messages(changed) == [
        "This form was already sent with other values, and that first submit was carried out; "
        "nothing more was done. Check the position before trying again."
    ]
    position.refresh_from_db()
    assert position.collateral.amount == Decimal(1600)


def test_a_tampered_margin_form_id_is_refused_above_the_form(alice_client, position):
    before = money_snapshot()
    response = alice_client.post(
        reverse("position-margin", args=[position.pk]),
        {"margin-action": "add", "margin-amount": "100", "margin-client_request_id": "x" * 65},
    )
    assert response.status_code == 400
    errors = response.content.decode().split('class="form-errors"', 1)[1].split("</div>")[0]
    assert "client_request_id is at most 64 characters." in errors
    assert money_snapshot() == before


def test_a_ticket_sent_again_after_its_position_closed_does_not_say_it_opened_one(
    alice_client, account, btc
):
    """Back on a ticket already sent (the browser keeps the page and its one-time id), the
    same order again: the first one's position has closed since, so the page says nothing
    new was opened rather than "Opened position" about a closed one."""
    from positions.services import position_close

    sent = market_long(btc, ticket(alice_client, account))
    url = reverse("trade", args=[account.pk])
    alice_client.post(url, sent, follow=True)
    position = Position.objects.get(account=account)
    position_close(position_id=position.pk)
    before = money_snapshot()
    again = alice_client.post(url, sent, follow=True)
    assert money_snapshot() == before
    assert Order.objects.filter(account=account, reduce_only=False).count() == 1
    assert shown_messages(again) == [
        f"This ticket was already sent, and its order opened position #{position.pk}, which "
        "has been closed since; nothing more was done. Send a new ticket to trade again."
    ]


def test_a_ticket_sent_again_after_its_order_was_cancelled_does_not_say_it_rests(
    alice_client, account, btc
):
    from positions.services import order_cancel

    sent = {
        "instrument": btc.pk, "side": "long", "type": "limit", "price": "59000",
        "quantity": "0.1", "leverage": "10", "client_order_id": ticket(alice_client, account),
    }  # fmt: skip
    url = reverse("trade", args=[account.pk])
    alice_client.post(url, sent, follow=True)
    order = Order.objects.get(account=account)
    order_cancel(order_id=order.pk)
    before = money_snapshot()
    again = alice_client.post(url, sent, follow=True)
    assert money_snapshot() == before
    assert Order.objects.filter(account=account).count() == 1
    assert shown_messages(again) == [
        f"This ticket was already sent, and its order #{order.pk} is cancelled; nothing more "
        "was done. Send a new ticket to trade again."
    ]
