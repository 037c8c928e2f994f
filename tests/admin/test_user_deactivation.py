"""The operator deactivates a student on their user page: the one way a user becomes inactive
in the admin, through the same service as everywhere (``user_set_active``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from accounts.models import User
from positions.models import Order, Position
from positions.services import order_place, position_open
from tests.admin.conftest import make_instructor
from tests.admin.forms import admin_form_data
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants

pytestmark = pytest.mark.django_db

REASON = "Cancelled: the student's account was deactivated"


def user_page(user_id: int) -> str:
    return reverse("admin:accounts_user_change", args=[user_id])


def resting_buy(account, btc) -> Order:
    return order_place(
        account_id=account.pk, instrument_id=btc.pk, side="long", type="limit",
        quantity="0.1", leverage=10, price="59000",
    )  # fmt: skip


def save_active(client, user_id: int, active: bool):
    data = admin_form_data(client.get(user_page(user_id)))
    if active:
        data["is_active"] = "on"
    else:
        data.pop("is_active", None)
    return client.post(user_page(user_id), data, follow=True)


def test_unticking_active_cancels_the_students_opening_orders_and_keeps_positions(
    admin_client, btc, account
):
    position = position_open(
        account_id=account.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10,
        stop_loss="57000",
    )  # fmt: skip
    protective = order_place(
        account_id=account.pk, instrument_id=btc.pk, side="short", type="stop",
        quantity="0.1", stop_price="57500", reduce_only=True, position_id=position.pk,
    )  # fmt: skip
    buy = resting_buy(account, btc)

    response = save_active(admin_client, account.user_id, active=False)

    assert response.status_code == 200
    page = response.content.decode()
    assert "1 resting order(s) that would have opened a position were cancelled" in page
    assert not User.objects.get(pk=account.user_id).is_active
    buy.refresh_from_db()
    assert (buy.status, buy.reject_reason, buy.held_margin) == ("cancelled", REASON, 0)
    assert Order.objects.get(pk=protective.pk).status == "resting"
    assert Position.objects.get(pk=position.pk).status == "open"
    account.refresh_from_db()
    assert account.balance == Decimal(10000) - Decimal(603)  # the position's 600 + 3 fee only
    (logged,) = LogEntry.objects.filter(object_id=str(account.user_id))
    assert "Active" in logged.get_change_message()
    assert_ledger_invariants()


def test_ticking_active_again_reactivates_and_leaves_cancelled_orders_cancelled(
    admin_client, btc, account
):
    buy = resting_buy(account, btc)
    save_active(admin_client, account.user_id, active=False)

    response = save_active(admin_client, account.user_id, active=True)

    assert response.status_code == 200
    assert User.objects.get(pk=account.user_id).is_active
    assert Order.objects.get(pk=buy.pk).status == "cancelled"
    assert resting_buy(account, btc).status == "resting"
    assert_ledger_invariants()


def test_saving_the_page_without_touching_active_cancels_nothing(admin_client, btc, account):
    buy = resting_buy(account, btc)
    data = admin_form_data(admin_client.get(user_page(account.user_id)))
    data["first_name"] = "Alice"
    admin_client.post(user_page(account.user_id), data)
    assert User.objects.get(pk=account.user_id).first_name == "Alice"
    assert Order.objects.get(pk=buy.pk).status == "resting"


def test_an_instructor_does_not_deactivate_their_student(client):
    alpha = make_instructor("alpha")
    classroom = make_classroom(instructor=alpha)
    btc = make_instrument(classroom)
    student = make_student(classroom)
    buy = resting_buy(student, btc)
    client.force_login(alpha)
    data = {"username": student.user.username}  # is_active left out: unticked

    response = client.post(user_page(student.user_id), data)

    assert response.status_code == 403
    assert User.objects.get(pk=student.user_id).is_active
    assert Order.objects.get(pk=buy.pk).status == "resting"
