"""The engine's bulk insert (COPY on PostgreSQL) stores exactly the values it was given."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import DataError, transaction

from accounts.models import LedgerEntry, LedgerTransaction
from liquidation.settlement import insert_rows
from tests.factories import make_classroom, make_student

pytestmark = pytest.mark.django_db


def test_copied_rows_read_back_unchanged_whatever_their_text_or_nulls():
    classroom = make_classroom(name="Copy")
    account = make_student(classroom)
    at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    memos = ["tab\there", "line\nbreak\r\nand back\\slash", "plain", "ünïcödé ✓", ""]
    with transaction.atomic():
        ids = insert_rows(
            LedgerTransaction,
            [
                {
                    "classroom_id": classroom.pk, "kind": LedgerTransaction.Kind.GRANT,
                    "memo": memo, "position_id": None if n % 2 else 10**12 + n,
                    "created_by_id": None, "created_at": at,
                }
                for n, memo in enumerate(memos)
            ],
            with_ids=True,
        )  # fmt: skip
        amounts = [Decimal("0.00000001"), Decimal("-123456789.12345678"), Decimal("1E+2")]
        insert_rows(
            LedgerEntry,
            [
                {
                    "transaction_id": ids[0], "classroom_id": classroom.pk,
                    "pocket": LedgerEntry.Pocket.ACCOUNT if n == 0 else LedgerEntry.Pocket.HOUSE,
                    "account_id": account.pk if n == 0 else None, "position_id": None,
                    "amount": amount,
                }
                for n, amount in enumerate(amounts)
            ],
        )  # fmt: skip
    stored = LedgerTransaction.objects.filter(pk__in=ids).order_by("pk")
    assert [t.pk for t in stored] == ids
    assert [t.memo for t in stored] == memos
    assert [t.position_id for t in stored] == [10**12, None, 10**12 + 2, None, 10**12 + 4]
    assert all(t.created_at == at and t.created_by_id is None for t in stored)
    entries = LedgerEntry.objects.filter(transaction_id=ids[0]).order_by("pk")
    assert [e.amount for e in entries] == amounts
    assert [e.account_id for e in entries] == [account.pk, None, None]
    assert [e.pocket for e in entries] == ["account", "house", "house"]


def test_a_failed_copy_raises_djangos_database_error_that_the_engine_handles():
    """The engine catches DatabaseError per phase; a COPY error must be one, not psycopg's."""
    classroom = make_classroom(name="Overflow")
    too_large = Decimal(10) ** 17  # beyond NUMERIC(24, 8)
    with pytest.raises(DataError), transaction.atomic():
        (transaction_id,) = insert_rows(
            LedgerTransaction,
            [
                {
                    "classroom_id": classroom.pk, "kind": LedgerTransaction.Kind.GRANT,
                    "memo": "", "position_id": None, "created_by_id": None,
                    "created_at": datetime(2026, 3, 1, tzinfo=UTC),
                },
            ],
            with_ids=True,
        )  # fmt: skip
        insert_rows(
            LedgerEntry,
            [{"transaction_id": transaction_id, "classroom_id": classroom.pk,
              "pocket": "house", "account_id": None, "position_id": None,
              "amount": too_large}],
        )  # fmt: skip
