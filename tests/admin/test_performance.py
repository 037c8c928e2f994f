"""One student, three screens: the leaderboard page, the API leaderboard and the grade book
must tell the same maximum drawdown, return and liquidation count."""

from __future__ import annotations

from decimal import Decimal

from django.test import Client
from django.urls import reverse

from accounts.money import money
from accounts.services import account_adjust
from liquidation.models import LiquidationEvent
from positions.models import Instrument, Position
from positions.services import position_close, position_open
from tests.admin.conftest import engine_set_price, make_instructor
from tests.admin.test_grades import export
from tests.api.conftest import client_for, new_key
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants

D = Decimal


def set_mark(instrument: Instrument, mark: str) -> None:
    instrument.mark_price = D(mark)
    instrument.save(update_fields=["mark_price"])


def test_leaderboard_api_and_grade_book_agree_and_leave_funding_out(db):
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, name="Agree 101", max_leverage=50)
    btc = make_instrument(classroom)
    sam = make_student(classroom, username="sam")
    tia = make_student(classroom, username="tia")

    # Sam: a grant of 2,000, a winning trade, a deduction of 3,000, then a 50x long that
    # the engine liquidates.
    account_adjust(account_id=sam.pk, amount=D(2000), reason="Bonus", actor_id=teacher.pk)
    first = position_open(
        account_id=sam.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    set_mark(btc, "63000")
    position_close(position_id=first.pk)
    account_adjust(account_id=sam.pk, amount=D(-3000), reason="Penalty", actor_id=teacher.pk)
    set_mark(btc, "60000")
    doomed = position_open(
        account_id=sam.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=50
    )
    engine_set_price(btc, "58800")
    doomed.refresh_from_db()
    assert doomed.status == Position.Status.LIQUIDATED
    assert LiquidationEvent.objects.filter(position=doomed).count() == 1
    # Tia: only a deduction; she never trades.
    account_adjust(account_id=tia.pk, amount=D(-500), reason="Late", actor_id=teacher.pk)
    assert_ledger_invariants()

    # By hand, funding left out, from the starting balance of 10,000:
    #   open 0.1 @ 60000 at 10x, fee 3                    -> 9,997
    #   close @ 63000: +300, fee 3.15                       -> 10,293.85 (the peak)
    #   open 0.1 @ 60000 at 50x, fee 3 (collateral 120)     -> 10,290.85
    #   liquidated at 58800: the 120 of collateral is lost  -> 10,170.85 (and today)
    # Paid in: 10,000 + 2,000 - 3,000 = 9,000; free balance today 9,170.85, no open position.
    sam_equity = D(10000) + 2000 - 3 + (300 - D("3.15")) - 3000 - 3 - 120
    assert sam_equity == D("9170.85")
    sam_drawdown = D("10293.85") - D("10170.85")
    assert sam_drawdown == D(123)
    sam_drawdown_pct = money(sam_drawdown / D("10293.85") * 100)
    assert sam_drawdown_pct == D("1.19488821")
    sam_return = money((sam_equity - 9000) / 9000 * 100)
    assert sam_return == D("1.89833333")
    # The old leaderboard counted the deduction as a fall of 3,000 from 12,293.85 (25.40%).
    assert sam_drawdown_pct < 2

    # The leaderboard page, as Sam sees it.
    web = Client()
    web.force_login(sam.user)
    page = web.get(reverse("leaderboard", args=[sam.pk]))
    assert page.status_code == 200
    web_rows = {row.account.user.username: row for row in page.context["rows"]}
    assert web_rows["sam"].max_drawdown_pct == sam_drawdown_pct
    assert web_rows["sam"].return_pct == sam_return
    assert web_rows["sam"].liquidations == 1
    assert web_rows["sam"].equity == sam_equity
    assert web_rows["tia"].max_drawdown_pct == 0  # a deduction is not a drawdown
    assert web_rows["tia"].return_pct == 0
    html = page.content.decode()
    assert "1.19%" in html and "1.90%" in html

    # The API leaderboard, with Sam's key.
    board = client_for(new_key(sam, "read")).get(f"/api/v1/classrooms/{classroom.pk}/leaderboard")
    assert board.status_code == 200
    api_rows = {r["username"]: r for r in board.json()["results"]}
    assert D(api_rows["sam"]["max_drawdown_pct"]) == sam_drawdown_pct
    assert D(api_rows["sam"]["return_pct"]) == sam_return
    assert api_rows["sam"]["liquidations"] == 1
    assert D(api_rows["tia"]["max_drawdown_pct"]) == 0

    # The grade book, as the instructor exports it.
    teacher_client = Client()
    teacher_client.force_login(teacher)
    grades = {row["username"]: row for row in export(teacher_client, classroom)}
    assert D(grades["sam"]["max_drawdown"]) == sam_drawdown
    assert D(grades["sam"]["max_drawdown_pct"]) == sam_drawdown_pct
    assert D(grades["sam"]["return_pct"]) == sam_return
    assert grades["sam"]["liquidations"] == "1"
    assert D(grades["sam"]["funded"]) == 9000
    assert D(grades["sam"]["equity"]) == sam_equity
    assert grades["tia"]["max_drawdown"] == "0"
    assert grades["tia"]["return_pct"] == "0"
