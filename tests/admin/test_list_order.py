"""The ledger and mark history lists open on their latest rows: the grant an instructor has
just made, the mark the engine has just stored, not the first rows of the term."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import LedgerEntry, LedgerTransaction, TradingAccount
from liquidation.models import PriceTick
from positions.models import Instrument
from tests.factories import make_instrument

pytestmark = pytest.mark.django_db


def first_row_id(html: str, url_part: str) -> int:
    match = re.search(rf'<th class="field-id"><a href="[^"]*/{url_part}/(\d+)/change/', html)
    assert match, "the list has a linked id column"
    return int(match.group(1))


def test_the_ledger_lists_open_on_the_latest_movement(world, alpha_client):
    account = TradingAccount.objects.filter(classroom=world.alpha_class).first()
    assert account is not None
    run = {"action": "grant_or_deduct", "_selected_action": [account.pk], "confirm": "yes"}
    alpha_client.post(
        reverse("admin:accounts_tradingaccount_changelist"),
        {**run, "direction": "grant", "amount": "5", "reason": "Asked a good question"},
    )
    grant = LedgerTransaction.objects.filter(classroom=world.alpha_class).latest("id")
    assert grant.memo == "Asked a good question"
    assert LedgerTransaction.objects.filter(classroom=world.alpha_class).count() > 1

    transactions = alpha_client.get(reverse("admin:accounts_ledgertransaction_changelist"))
    assert first_row_id(transactions.content.decode(), "ledgertransaction") == grant.pk
    entries = alpha_client.get(reverse("admin:accounts_ledgerentry_changelist"))
    newest_entry = LedgerEntry.objects.filter(classroom=world.alpha_class).latest("id")
    assert first_row_id(entries.content.decode(), "ledgerentry") == newest_entry.pk


def test_the_mark_history_opens_on_the_latest_mark(world, alpha_client):
    btc = Instrument.objects.get(classroom=world.alpha_class)
    PriceTick.objects.create(instrument=btc, price=Decimal("61000"))
    latest = PriceTick.objects.create(instrument=btc, price=Decimal("61234.5"))
    assert PriceTick.objects.filter(instrument=btc).count() >= 3
    html = alpha_client.get(reverse("admin:liquidation_pricetick_changelist")).content.decode()
    first_row = html.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert f"/pricetick/{latest.pk}/change/" in first_row


def test_the_mark_history_opens_on_the_latest_mark_of_any_instrument(world, alpha_client):
    btc = Instrument.objects.get(classroom=world.alpha_class)
    eth = make_instrument(world.alpha_class, symbol="ETHUSDT", mark="3000")
    assert btc.pk < eth.pk  # the newer instrument sorts after the older one by id
    PriceTick.objects.create(instrument=btc, price=Decimal("61000"))
    latest = PriceTick.objects.create(instrument=eth, price=Decimal("3012.5"))
    PriceTick.objects.filter(pk=latest.pk).update(created_at=timezone.now() + timedelta(seconds=1))
    html = alpha_client.get(reverse("admin:liquidation_pricetick_changelist")).content.decode()
    first_row = html.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    assert f"/pricetick/{latest.pk}/change/" in first_row
