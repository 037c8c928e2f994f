"""Changes of a position's take-profit and stop-loss on its page's timeline."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from positions.models import Position, TpSlChange
from positions.services import position_add_margin, position_open, position_set_tpsl

pytestmark = pytest.mark.django_db


def _timeline(content: str) -> list[tuple[str, str]]:
    """The timeline's events, oldest first, as (kind, text without its time)."""
    section = content.split("<h2>Timeline</h2>", 1)[1].split("</ol>", 1)[0]
    events = []
    for kind, body in re.findall(r'<li class="event-([a-z_]+)">(.*?)</li>', section, re.S):
        text = re.sub(r"<time[^>]*>.*?</time>", "", body, flags=re.S)
        events.append((kind, " ".join(re.sub(r"<[^>]+>", "", text).split())))
    return events


def _tpsl(client, position: Position, take_profit: str, stop_loss: str):
    return client.post(
        reverse("position-tpsl", args=[position.pk]),
        {"tpsl-take_profit": take_profit, "tpsl-stop_loss": stop_loss},
    )


def test_moved_stop_loss_and_cleared_take_profit_appear_in_order_on_the_timeline(
    alice_client, position
):
    assert _tpsl(alice_client, position, "65000", "58000").status_code == 302
    assert _tpsl(alice_client, position, "65000", "57500").status_code == 302
    position_add_margin(position_id=position.pk, amount="100")
    assert _tpsl(alice_client, position, "65000", "58500").status_code == 302
    assert _tpsl(alice_client, position, "", "58500").status_code == 302

    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert _timeline(page) == [
        ("open", "Position opened Long 0.5 BTCUSDT at 60,000.0, 20x; collateral +1,500.00"),
        ("tpsl", "TP / SL changed Take-profit set at 65,000.0; stop-loss set at 58,000.0"),
        ("tpsl", "TP / SL changed Stop-loss 58,000.0 → 57,500.0; take-profit unchanged"),
        ("add_margin", "Margin added collateral +100.00"),
        ("tpsl", "TP / SL changed Stop-loss 57,500.0 → 58,500.0; take-profit unchanged"),
        ("tpsl", "TP / SL changed Take-profit cleared; stop-loss unchanged"),
    ]


def test_a_refused_or_unchanged_tpsl_request_writes_nothing(alice_client, position):
    assert _tpsl(alice_client, position, "", "58000").status_code == 302
    # Beyond the liquidation price (57,229.0): refused next to the field.
    refused = _tpsl(alice_client, position, "", "50000")
    assert refused.status_code == 400
    assert "beyond the liquidation price" in refused.content.decode()
    # The same levels again: saved, but nothing moved.
    assert _tpsl(alice_client, position, "", "58000.0").status_code == 302

    position.refresh_from_db()
    assert (position.take_profit, position.stop_loss) == (None, Decimal("58000"))
    assert TpSlChange.objects.filter(position=position).count() == 1
    page = alice_client.get(reverse("position", args=[position.pk])).content.decode()
    assert [text for kind, text in _timeline(page) if kind == "tpsl"] == [
        "TP / SL changed Stop-loss set at 58,000.0; no take-profit"
    ]


def test_another_student_sees_no_tpsl_change_of_a_position_not_theirs(
    bob_client, position, other_account, btc
):
    position_set_tpsl(position_id=position.pk, take_profit="65000", stop_loss="58000")
    assert bob_client.get(reverse("position", args=[position.pk])).status_code == 404
    assert bob_client.get(reverse("position-live", args=[position.pk])).status_code == 404
    own = position_open(
        account_id=other_account.pk, instrument_id=btc.pk, side="long", quantity="0.5", leverage=20
    )
    page = bob_client.get(reverse("position", args=[own.pk])).content.decode()
    assert [kind for kind, _ in _timeline(page)] == ["open"]
    assert "65,000.0" not in page


def test_position_page_queries_do_not_grow_with_tpsl_changes(
    alice_client, position, django_assert_max_num_queries
):
    # The page reads the position's changes in one query of their own, however many.
    position_set_tpsl(position_id=position.pk, take_profit="65000", stop_loss="58000")
    url = reverse("position", args=[position.pk])
    with CaptureQueriesContext(connection) as few:
        alice_client.get(url)
    for level in ("57300", "57400", "57500", "57600", "57700"):
        position_set_tpsl(position_id=position.pk, take_profit="65000", stop_loss=level)
    with django_assert_max_num_queries(len(few)):
        page = alice_client.get(url).content.decode()
    assert [kind for kind, _ in _timeline(page)].count("tpsl") == 6
