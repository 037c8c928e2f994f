"""The accounts list, the classroom roster and the grade export read every account in a constant
number of queries."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import TradingAccount
from accounts.money import money_text
from positions.selectors import account_overview
from positions.services import position_open
from tests.factories import UserFactory, make_classroom, make_instrument, make_student


def _class_with_students(count: int):
    classroom = make_classroom(name=f"Class of {count}", max_leverage=50)
    btc = make_instrument(classroom)
    for _ in range(count):
        account = make_student(classroom)
        for leverage in (5, 10):
            position_open(
                account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.01",
                leverage=leverage,
            )  # fmt: skip
    return classroom, btc


def _queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response


@pytest.mark.django_db
def test_the_accounts_list_and_roster_do_not_query_per_student(
    client, django_assert_max_num_queries
):
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    small, _ = _class_with_students(2)
    large, btc = _class_with_students(12)
    btc.mark_price = Decimal(59000)
    btc.save(update_fields=["mark_price"])

    accounts_url = reverse("admin:accounts_tradingaccount_changelist")
    few, _ = _queries(client, f"{accounts_url}?classroom__id__exact={small.pk}")
    many, response = _queries(client, f"{accounts_url}?classroom__id__exact={large.pk}")
    # Six times the students, and not one query more (the first page also warms caches).
    assert many <= few
    # The equity column shows each account valued at the marks.
    account = TradingAccount.objects.filter(classroom=large).first()
    assert account is not None
    equity = account_overview(account).equity
    assert account.balance < equity < Decimal(10000)  # collateral counted, the loss taken
    shown = money_text(equity, large.currency)  # in the class currency, as students read it
    assert f'<td class="field-equity">{shown}</td>' in response.content.decode()

    roster_small, _ = _queries(client, reverse("admin:accounts_classroom_change", args=[small.pk]))
    roster_large, _ = _queries(client, reverse("admin:accounts_classroom_change", args=[large.pk]))
    assert roster_large <= roster_small


@pytest.mark.django_db
def test_the_grade_export_does_not_query_per_student(client):
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    small, _ = _class_with_students(2)
    large, _ = _class_with_students(12)

    def export(classroom):
        with CaptureQueriesContext(connection) as queries:
            response = client.post(
                reverse("admin:accounts_classroom_changelist"),
                {"action": "export_grades", "_selected_action": [classroom.pk], "confirm": "yes"},
            )
        assert response.status_code == 200
        rows = response.content.decode().strip().splitlines()
        return len(queries), rows

    few, rows_small = export(small)
    many, rows_large = export(large)
    assert len(rows_small) == 1 + 2 and len(rows_large) == 1 + 12  # a header, then one per student
    assert many <= few
