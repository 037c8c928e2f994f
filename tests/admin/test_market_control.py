"""Scenarios and replays started and stopped from the admin, through the engine's services."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from accounts.models import LedgerTransaction
from liquidation import engine
from liquidation.models import PriceFeed, ReplayPoint, Scenario
from positions.models import Instrument
from tests.invariants import assert_ledger_invariants

INSTRUMENTS = reverse("admin:positions_instrument_changelist")
SCENARIOS = reverse("admin:liquidation_scenario_changelist")
D = Decimal


def alpha_btc(world) -> Instrument:
    return Instrument.objects.get(classroom=world.alpha_class)


def act(client, changelist, action, objects, **data):
    return client.post(
        changelist,
        {"action": action, "_selected_action": [o.pk for o in objects], "confirm": "yes", **data},
    )


def test_start_a_move_then_stop_it(world, alpha_client):
    btc = alpha_btc(world)
    ledger_before = LedgerTransaction.objects.count()
    response = act(
        alpha_client, INSTRUMENTS, "start_scenario", [btc],
        kind="move", percent="-30", duration_seconds="60",
    )  # fmt: skip
    assert response.status_code == 302
    scenario = Scenario.objects.get(instrument=btc, status=Scenario.Status.ACTIVE)
    listed = alpha_client.get(SCENARIOS).content.decode()
    assert '<td class="field-classroom">alpha class</td>' in listed  # symbols repeat per class
    assert (scenario.kind, scenario.percent, scenario.duration_seconds) == ("move", D(-30), D(60))
    assert scenario.start_price == btc.mark_price and scenario.created_by == world.alpha
    assert LogEntry.objects.filter(
        object_id=str(btc.pk), change_message__contains="Started"
    ).exists()

    response = act(alpha_client, SCENARIOS, "stop_scenarios", [scenario])
    assert response.status_code == 302
    scenario.refresh_from_db()
    assert scenario.status == Scenario.Status.CANCELLED
    assert LogEntry.objects.filter(
        object_id=str(scenario.pk), change_message__contains="Stopped"
    ).exists()
    assert LedgerTransaction.objects.count() == ledger_before  # moving the market moves no money
    # Stopping it again stops nothing, and says so instead of "Stopped 1".
    selected = {"action": "stop_scenarios", "_selected_action": [scenario.pk], "confirm": "yes"}
    again = alpha_client.post(SCENARIOS, selected, follow=True)
    assert "Nothing was stopped: none of the selected scenarios was running." in (
        again.content.decode()
    )
    assert LogEntry.objects.filter(change_message__contains="Stopped").count() == 1
    assert_ledger_invariants()


def test_setting_the_price_cancels_the_active_scenario(world, alpha_client):
    btc = alpha_btc(world)
    act(alpha_client, INSTRUMENTS, "start_scenario", [btc], kind="move", percent="10")
    act(alpha_client, INSTRUMENTS, "start_scenario", [btc], kind="set_price", target_price="42000")
    active = Scenario.objects.get(instrument=btc, status=Scenario.Status.ACTIVE)
    assert (active.kind, active.target_price) == ("set_price", D(42000))
    assert Scenario.objects.filter(instrument=btc, status=Scenario.Status.CANCELLED).count() == 1


def test_a_refused_scenario_is_a_form_error_and_starts_nothing(world, alpha_client):
    btc = alpha_btc(world)
    before = Scenario.objects.count()
    for data in (
        {"kind": "move", "percent": "0"},
        {"kind": "move", "percent": "-150"},
        {"kind": "move"},
        {"kind": "set_price", "target_price": "-5"},
        {"kind": "move", "percent": "-10", "duration_seconds": "-1"},
        {"kind": "teleport", "percent": "5"},
    ):
        response = act(alpha_client, INSTRUMENTS, "start_scenario", [btc], **data)
        assert response.status_code == 200, data
        assert b"errorlist" in response.content, data
    assert Scenario.objects.count() == before
    assert not Scenario.objects.filter(status=Scenario.Status.ACTIVE).exists()


def test_replay_an_uploaded_csv(world, alpha_client):
    btc = alpha_btc(world)
    ledger_before = LedgerTransaction.objects.count()
    upload = SimpleUploadedFile("crash.csv", b"seconds,price\n0,60000\n1,59000\n2,45000\n")
    response = act(alpha_client, INSTRUMENTS, "replay_csv", [btc], csv_file=upload, speed="2")
    assert response.status_code == 302
    feed = PriceFeed.objects.get(instrument=btc)
    assert feed.kind == PriceFeed.Kind.REPLAY and feed.replay_speed == D(2)
    assert list(feed.replay_points.values_list("offset_seconds", "price")) == [
        (D(0), D(60000)),
        (D(1), D(59000)),
        (D(2), D(45000)),
    ]
    assert LogEntry.objects.filter(
        object_id=str(btc.pk), change_message__contains="Replaying"
    ).exists()
    assert LedgerTransaction.objects.count() == ledger_before
    assert_ledger_invariants()


def test_a_broken_csv_changes_nothing(world, alpha_client):
    btc = alpha_btc(world)
    before = list(ReplayPoint.objects.filter(feed__instrument=btc).values_list("pk", flat=True))
    upload = SimpleUploadedFile("bad.csv", b"0,60000\n1,not-a-price\n")
    response = act(alpha_client, INSTRUMENTS, "replay_csv", [btc], csv_file=upload, speed="1")
    assert response.status_code == 200
    assert b"Nothing was changed" in response.content
    # A good file at a speed out of range: the error is the speed's, not the file's.
    upload = SimpleUploadedFile("ok.csv", b"0,60000\n1,59000\n")
    slow = act(alpha_client, INSTRUMENTS, "replay_csv", [btc], csv_file=upload, speed="0")
    errors = slow.context["form"].errors
    assert "The speed must be between 0.01 and 1000." in " ".join(errors.get("speed", []))
    assert "csv_file" not in errors
    after = list(ReplayPoint.objects.filter(feed__instrument=btc).values_list("pk", flat=True))
    assert after == before


def test_a_csv_with_old_mac_line_ends_is_replayed(world, alpha_client):
    btc = alpha_btc(world)
    upload = SimpleUploadedFile("mac.csv", b"seconds,price\r0,60000\r1,59000\r")
    response = act(alpha_client, INSTRUMENTS, "replay_csv", [btc], csv_file=upload, speed="1")
    assert response.status_code == 302
    feed = PriceFeed.objects.get(instrument=btc)
    assert list(feed.replay_points.values_list("offset_seconds", "price")) == [
        (D(0), D(60000)),
        (D(1), D(59000)),
    ]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        # Times no replay could mean, whose arithmetic overflows or whose storage would.
        (b"0,60000\n1e9999999,59000\n", "Row 2: '1e9999999' is too far from 0"),
        (b"1e9999999,60000\n0,59000\n", "Row 1: '1e9999999' is too far from 0"),
        (b"0,60000\n1e-9999999,59000\n1,58000\n", None),
        # A price that rounds to nothing on the price columns' ten decimal places.
        (b"0,60000\n1,1e-9999999\n", "Row 2: the price must be at least 0.0000000001."),
        (b"0,60000\n1,0.00000000001\n", "Row 2: the price must be at least 0.0000000001."),
    ],
)
def test_a_csv_with_numbers_beyond_the_columns_is_a_form_error_or_rounded(
    world, alpha_client, rows, message
):
    btc = alpha_btc(world)
    before = list(ReplayPoint.objects.filter(feed__instrument=btc).values_list("pk", flat=True))
    upload = SimpleUploadedFile("odd.csv", rows)
    response = act(alpha_client, INSTRUMENTS, "replay_csv", [btc], csv_file=upload, speed="1")
    if message is None:
        # A time a hair after the start is the start, on the column's milliseconds.
        assert response.status_code == 302
        feed = PriceFeed.objects.get(instrument=btc)
        assert list(feed.replay_points.values_list("offset_seconds", "price")) == [
            (D(0), D(60000)),
            (D(0), D(59000)),
            (D(1), D(58000)),
        ]
        return
    assert response.status_code == 200
    assert f"Nothing was changed. {message}" in " ".join(
        response.context["form"].errors["csv_file"]
    )
    after = list(ReplayPoint.objects.filter(feed__instrument=btc).values_list("pk", flat=True))
    assert after == before


def test_a_csv_the_reader_cannot_read_is_a_form_error(world, alpha_client):
    btc = alpha_btc(world)
    before = list(ReplayPoint.objects.filter(feed__instrument=btc).values_list("pk", flat=True))
    upload = SimpleUploadedFile("long.csv", b"0," + b"9" * 200_000 + b"\n")
    response = act(alpha_client, INSTRUMENTS, "replay_csv", [btc], csv_file=upload, speed="1")
    assert response.status_code == 200
    assert "Nothing was changed. The CSV could not be read" in " ".join(
        response.context["form"].errors["csv_file"]
    )
    after = list(ReplayPoint.objects.filter(feed__instrument=btc).values_list("pk", flat=True))
    assert after == before


def test_a_scenario_field_the_kind_does_not_use_is_a_form_error(world, alpha_client):
    btc = alpha_btc(world)
    before = Scenario.objects.count()
    for data, field, message in (
        ({"kind": "set_price", "target_price": "42000", "percent": "5"}, "percent",
         "Setting the price takes no percent"),
        ({"kind": "set_price", "target_price": "42000", "duration_seconds": "30"},
         "duration_seconds", "The price is set on the next tick"),
        ({"kind": "move", "percent": "-30", "target_price": "42000"}, "target_price",
         "A move starts from the current mark"),
        ({"kind": "move", "duration_seconds": "60"}, "percent", "Enter the move in percent"),
        ({"kind": "set_price"}, "target_price", "Enter the price to set."),
    ):  # fmt: skip
        response = act(alpha_client, INSTRUMENTS, "start_scenario", [btc], **data)
        assert response.status_code == 200, data
        assert message in " ".join(response.context["form"].errors.get(field, [])), data
    assert Scenario.objects.count() == before


def test_a_started_scenario_says_what_it_does(world, alpha_client):
    btc = alpha_btc(world)
    page = alpha_client.post(
        INSTRUMENTS,
        {"action": "start_scenario", "_selected_action": [btc.pk], "confirm": "yes",
         "kind": "move", "percent": "-30", "duration_seconds": "60"},
        follow=True,
    ).content.decode()  # fmt: skip
    assert "Started a scenario on 1 instrument(s): move by -30% over 60 s." in page
    scenario = Scenario.objects.get(instrument=btc, status=Scenario.Status.ACTIVE)
    assert LogEntry.objects.filter(
        object_id=str(btc.pk),
        change_message=f"Started scenario #{scenario.pk}: move by -30% over 60 s.",
    ).exists()
    act(alpha_client, INSTRUMENTS, "start_scenario", [btc], kind="set_price", target_price="4.2e4")
    assert LogEntry.objects.filter(
        object_id=str(btc.pk), change_message__endswith=": set the price to 42,000."
    ).exists()


def test_the_scenario_form_shows_the_marks_it_would_start_from(world, alpha_client):
    btc = alpha_btc(world)
    Instrument.objects.filter(pk=btc.pk).update(mark_price=D("61234.5"))
    asked = alpha_client.post(
        INSTRUMENTS, {"action": "start_scenario", "_selected_action": [btc.pk]}
    ).content.decode()
    assert f"Marks now: {btc.symbol} 61,234.5." in asked
    assert not Scenario.objects.filter(status=Scenario.Status.ACTIVE).exists()


def test_setting_the_price_of_a_new_instrument_without_feed_or_mark_gives_it_one(
    world, alpha_client
):
    """Such an instrument is not one the engine ticks: the scenario gives it a manual feed,
    so the next tick sets the price and students can trade it."""
    fresh = Instrument.objects.create(classroom=world.alpha_class, symbol="NEWUSDT")
    response = act(
        alpha_client, INSTRUMENTS, "start_scenario", [fresh], kind="set_price", target_price="250"
    )
    assert response.status_code == 302
    assert fresh.pk in engine.active_instrument_ids()  # what the beat fans out
    assert engine.tick_instrument(fresh.pk, timezone.now()).status == "ticked"
    fresh.refresh_from_db()
    assert fresh.mark_price == D(250)
    assert PriceFeed.objects.get(instrument=fresh).kind == PriceFeed.Kind.MANUAL


def test_a_scenario_on_a_switched_off_feed_is_refused_and_says_why(world, alpha_client):
    btc = alpha_btc(world)
    PriceFeed.objects.filter(instrument=btc).update(is_active=False)
    response = act(
        alpha_client, INSTRUMENTS, "start_scenario", [btc],
        kind="move", percent="-30", duration_seconds="0",
    )  # fmt: skip
    assert response.status_code == 200
    assert "Nothing was started. The price feed of ALPUSDT is switched off" in (
        response.content.decode()
    )
    assert not Scenario.objects.filter(instrument=btc, status=Scenario.Status.ACTIVE).exists()
    assert not PriceFeed.objects.get(instrument=btc).is_active
