"""An instructor reads a position's take-profit and stop-loss changes on its admin page."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from positions.models import Position
from positions.services import position_set_tpsl

pytestmark = pytest.mark.django_db


def _cells(html: str, field: str) -> list[str]:
    found = re.findall(rf'<td class="field-{field}">(.*?)</td>', html, re.S)
    return [re.sub(r"<[^>]+>", "", text).strip() for text in found]


def test_position_admin_lists_its_tpsl_changes_read_only(world, alpha_client):
    held = Position.objects.get(account__classroom=world.alpha_class, status=Position.Status.OPEN)
    position_set_tpsl(position_id=held.pk, take_profit="65000", stop_loss="58000")
    position_set_tpsl(position_id=held.pk, take_profit=None, stop_loss="57500")
    url = reverse("admin:positions_position_change", args=[held.pk])
    html = alpha_client.get(url).content.decode()
    assert _cells(html, "take_profit_before") == ["-", "65,000"]
    assert _cells(html, "take_profit_after") == ["65,000", "-"]
    assert _cells(html, "stop_loss_before") == ["-", "58,000"]
    assert _cells(html, "stop_loss_after") == ["58,000", "57,500"]
    assert 'name="tpsl_changes-0-stop_loss_after"' not in html
    # Another classroom's instructor does not reach the position, so not its changes either.
    alpha_client.force_login(world.bravo)
    other = alpha_client.get(url, follow=True)
    assert "57,500" not in other.content.decode()
