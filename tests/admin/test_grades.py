"""The grade book: a class with known trades, checked column by column."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from django.urls import reverse
from django.utils import timezone

from accounts.money import money
from liquidation import engine
from liquidation.instructor import GRADE_COLUMNS
from liquidation.models import MarginCall
from liquidation.performance import leaderboard
from liquidation.services import scenario_start
from positions.models import Instrument, Position
from positions.services import position_close, position_open
from tests.admin.conftest import make_instructor
from tests.factories import make_classroom, make_instrument, make_student
from tests.invariants import assert_ledger_invariants

D = Decimal


def set_mark(instrument: Instrument, mark: str) -> None:
    instrument.mark_price = D(mark)
    instrument.save(update_fields=["mark_price"])


def export(client, classroom) -> list[dict[str, str]]:
    response = client.post(
        reverse("admin:accounts_classroom_changelist"),
        {"action": "export_grades", "_selected_action": [classroom.pk], "confirm": "yes"},
    )
    assert response.status_code == 200
    reader = csv.DictReader(io.StringIO(response.content.decode()))
    assert reader.fieldnames == GRADE_COLUMNS
    return list(reader)


def test_grade_export_checks_every_column(db, client):
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, name="Grades 101", max_leverage=50)
    btc = make_instrument(classroom)
    ann = make_student(classroom, username="ann")
    ben = make_student(classroom, username="ben")
    make_student(classroom, username="cid")  # never trades
    dan = make_student(classroom, username="dan")

    # Dan: a 50x long that the engine liquidates when the mark drops to 58800.
    doomed = position_open(
        account_id=dan.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=50
    )
    scenario_start(instrument_id=btc.pk, kind="set_price", target_price="58800")
    assert engine.tick_instrument(btc.pk, timezone.now()).status == "ticked"
    doomed.refresh_from_db()
    assert doomed.status == Position.Status.LIQUIDATED
    btc.refresh_from_db()
    set_mark(btc, "60000")

    # Ann: a long with a stop-loss closed at a profit, then a short still open.
    first = position_open(
        account_id=ann.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10,
        stop_loss="55000",
    )  # fmt: skip
    set_mark(btc, "63000")
    position_close(position_id=first.pk)
    short = position_open(
        account_id=ann.pk, instrument_id=btc.pk, side="short", quantity="0.1", leverage=20
    )
    # Ben: a long without a stop-loss, closed at a loss.
    set_mark(btc, "60000")
    loser = position_open(
        account_id=ben.pk, instrument_id=btc.pk, side="long", quantity="0.2", leverage=20
    )
    set_mark(btc, "58000")
    position_close(position_id=loser.pk)
    set_mark(btc, "64000")
    MarginCall.objects.create(
        position=short, classroom=classroom, mark_price=D("64000"), margin_ratio=D("0.81"),
        outcome=MarginCall.Outcome.MARGIN_ADDED,
    )  # fmt: skip
    for outcome in (MarginCall.Outcome.REDUCED, MarginCall.Outcome.PENDING):
        MarginCall.objects.create(
            position=loser, classroom=classroom, mark_price=D("58000"), margin_ratio=D("0.9"),
            outcome=outcome,
        )  # fmt: skip
    assert_ledger_invariants()

    client.force_login(teacher)
    rows = {row["username"]: row for row in export(client, classroom)}
    assert list(rows) == ["ann", "ben", "cid", "dan"]

    # Ann, by hand: open 0.1 @ 60000 (fee 3) -> close @ 63000 (+300, fee 3.15)
    # -> open short 0.1 @ 63000 (fee 3.15) -> marked at 64000 (-100 on 315 collateral).
    ann_equity = D(10000) - 3 + (300 - D("3.15")) - D("3.15") - 100
    ann_curve = [D(10000), D(9997), D("10293.85"), D("10290.70"), ann_equity]
    ann_drawdown = D("10293.85") - ann_equity
    assert ann_curve[-1] == D("10190.70")
    assert rows["ann"] == {
        "classroom": "Grades 101",
        "username": "ann",
        "name": "",
        "equity": "10190.7",
        "funded": "10000",
        "return_pct": "1.907",
        "max_drawdown": str(ann_drawdown.normalize()),
        "max_drawdown_pct": format(money(ann_drawdown / D("10293.85") * 100).normalize(), "f"),
        "trades": "2",
        "liquidations": "0",
        "average_leverage": "15",
        "max_leverage": "20",
        "stop_loss_pct": "50",
        "margin_calls": "1",
        "margin_calls_pending": "0",
        "margin_calls_margin_added": "1",
        "margin_calls_reduced": "0",
        "margin_calls_recovered": "0",
        "margin_calls_liquidated": "0",
    }
    # Ben: open 0.2 @ 60000 (fee 6) -> close @ 58000 (-400, fee 5.8).
    ben_equity = D(10000) - 6 - 400 - D("5.8")
    assert rows["ben"] == {
        "classroom": "Grades 101",
        "username": "ben",
        "name": "",
        "equity": str(ben_equity.normalize()),
        "funded": "10000",
        "return_pct": str(((ben_equity - 10000) / 100).normalize()),
        "max_drawdown": "411.8",
        "max_drawdown_pct": "4.118",
        "trades": "1",
        "liquidations": "0",
        "average_leverage": "20",
        "max_leverage": "20",
        "stop_loss_pct": "0",
        "margin_calls": "2",
        "margin_calls_pending": "1",
        "margin_calls_margin_added": "0",
        "margin_calls_reduced": "1",
        "margin_calls_recovered": "0",
        "margin_calls_liquidated": "0",
    }
    # Dan: open 0.1 @ 60000 at 50x (margin 120, fee 3), liquidated: the collateral is lost,
    # the free balance untouched.
    assert rows["dan"] == {
        "classroom": "Grades 101",
        "username": "dan",
        "name": "",
        "equity": "9877",
        "funded": "10000",
        "return_pct": "-1.23",
        "max_drawdown": "123",
        "max_drawdown_pct": "1.23",
        "trades": "1",
        "liquidations": "1",
        "average_leverage": "50",
        "max_leverage": "50",
        "stop_loss_pct": "0",
        "margin_calls": "0",
        "margin_calls_pending": "0",
        "margin_calls_margin_added": "0",
        "margin_calls_reduced": "0",
        "margin_calls_recovered": "0",
        "margin_calls_liquidated": "0",
    }
    assert rows["cid"]["trades"] == "0"
    assert rows["cid"]["equity"] == "10000"
    assert rows["cid"]["max_drawdown"] == "0"
    assert rows["cid"]["average_leverage"] == rows["cid"]["stop_loss_pct"] == ""
    assert Position.objects.filter(account=ann, status="open").count() == 1


def one_student_class(client, name: str, username: str):
    """A classroom with BTCUSDT and one student; its instructor signed in."""
    teacher = make_instructor("teacher")
    classroom = make_classroom(instructor=teacher, name=name, max_leverage=50)
    client.force_login(teacher)
    return classroom, make_instrument(classroom), make_student(classroom, username=username)


def test_drawdown_is_measured_on_what_the_student_started_with(db, client):
    """An instructor who changes the class's starting balance later (for the next resets)
    does not change how far the students who joined before fell: 411.8 lost from 10,000 is
    4.118%, in the grade book and on the leaderboard, whatever the class now starts with."""
    from tests.admin.forms import admin_form_data

    classroom, btc, ben = one_student_class(client, "Grades 102", "ben")
    # Open 0.2 @ 60000 (fee 6) -> close @ 58000 (-400, fee 5.8).
    loser = position_open(
        account_id=ben.pk, instrument_id=btc.pk, side="long", quantity="0.2", leverage=20
    )
    set_mark(btc, "58000")
    position_close(position_id=loser.pk)

    page = reverse("admin:accounts_classroom_change", args=[classroom.pk])
    for starting_balance in ("100", "1000000"):
        data = admin_form_data(client.get(page))
        data["starting_balance"] = starting_balance
        assert client.post(page, data).status_code == 302
        (row,) = export(client, classroom)
        assert (row["max_drawdown"], row["max_drawdown_pct"]) == ("411.8", "4.118")
        (entry,) = leaderboard(classroom)
        assert entry.max_drawdown_pct == D("4.118")


def test_a_stop_loss_set_after_opening_counts_once_it_has_fired(db, client):
    """A student who protects a position right after opening it, and whom that stop-loss
    then takes out of the trade, used a stop-loss: the grade book counts it."""
    from positions.services import position_set_tpsl

    classroom, btc, eve = one_student_class(client, "Grades 103", "eve")
    protected = position_open(
        account_id=eve.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10
    )
    position_set_tpsl(position_id=protected.pk, stop_loss="59000")
    position_open(account_id=eve.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=10)
    scenario_start(instrument_id=btc.pk, kind="set_price", target_price="58900")
    assert engine.tick_instrument(btc.pk, timezone.now()).status == "ticked"
    protected.refresh_from_db()
    assert protected.status == Position.Status.CLOSED and protected.stop_loss is None
    (row,) = export(client, classroom)
    assert (row["trades"], row["stop_loss_pct"]) == ("2", "50")


def test_the_instructors_guide_names_every_column_of_the_grade_export():
    import re
    from pathlib import Path

    from django.conf import settings

    guide = (Path(settings.BASE_DIR) / "docs" / "instructors.md").read_text()
    section = " ".join(guide.split("## The grade export")[1].split("\n## ")[0].split())
    named = set(re.findall(r"`([a-z_<>]+)`", section))
    outcomes = section.split("`margin_calls_<outcome>`: ")[1].split(")")[0]
    named |= {f"margin_calls_{o.strip()}" for o in outcomes.split(",")} - {"margin_calls_<outcome>"}
    assert set(GRADE_COLUMNS) <= named
