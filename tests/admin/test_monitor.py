"""The live class monitor: what it shows, and that HTMX refreshes get only the panel."""

from __future__ import annotations

from decimal import Decimal

from django.test import Client
from django.urls import reverse

from liquidation.admin_views import monitor_snapshot
from liquidation.models import EngineHeartbeat
from positions.models import Instrument
from positions.services import position_open
from tests.factories import make_student


def test_positions_are_sorted_by_distance_to_liquidation(world):
    btc = Instrument.objects.get(classroom=world.alpha_class)
    risky = make_student(world.alpha_class, username="alpha-risky")
    safe = make_student(world.alpha_class, username="alpha-safe")
    near = position_open(
        account_id=risky.pk, instrument_id=btc.pk, side="short", quantity="0.1", leverage=50
    )
    far = position_open(
        account_id=safe.pk, instrument_id=btc.pk, side="long", quantity="0.1", leverage=2
    )
    snapshot = monitor_snapshot(world.alpha_class)
    order = [p.pk for p, _ in snapshot.positions]
    assert order[0] == near.pk
    assert order[-1] == far.pk
    raw = [v.distance_to_liquidation_pct for _, v in snapshot.positions]
    distances = [d for d in raw if d is not None]
    assert len(distances) == len(raw)  # every position here has a liquidation price
    assert distances == sorted(distances)
    (row,) = snapshot.imbalances
    assert (row.long_count, row.short_count) == (2, 1)  # alpha-student-1's long, safe, risky
    assert row.long_quantity == Decimal("0.2") and row.short_quantity == Decimal("0.1")
    assert snapshot.insurance_fund == Decimal(1000)
    assert snapshot.heartbeat_age_seconds is not None and snapshot.heartbeat_age_seconds >= 0


def test_heartbeat_age_is_of_this_classrooms_engine_only(world):
    EngineHeartbeat.objects.filter(instrument__classroom=world.alpha_class).delete()
    assert monitor_snapshot(world.alpha_class).heartbeat_age_seconds is None
    assert monitor_snapshot(world.bravo_class).heartbeat_age_seconds is not None


def test_a_heartbeat_stamped_by_a_worker_whose_clock_runs_ahead_is_not_from_the_future(
    world, alpha_client
):
    """Workers and the web server may run on machines whose clocks differ by a little: a
    heartbeat a second "ahead" is a heartbeat just now, never "-1.0 s ago"."""
    from datetime import timedelta

    from django.utils import timezone

    btc = Instrument.objects.get(classroom=world.alpha_class)
    EngineHeartbeat.objects.create(instrument=btc, started_at=timezone.now() + timedelta(seconds=2))
    assert monitor_snapshot(world.alpha_class).heartbeat_age_seconds == 0
    url = reverse("admin:accounts_classroom_monitor", args=[world.alpha_class.pk])
    panel = alpha_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert '<span class="value" id="monitor-heartbeat">0.0 s ago</span>' in panel


def test_page_polls_itself_and_htmx_gets_only_the_panel(world, alpha_client):
    url = reverse("admin:accounts_classroom_monitor", args=[world.alpha_class.pk])
    page = alpha_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'hx-trigger="every 2s"' in html and f'hx-get="{url}"' in html
    assert "django_htmx/htmx-2.min.js" in html
    assert "<script>" not in html and " onclick=" not in html  # the CSP forbids inline code
    assert "alpha-student-1" in html
    panel = alpha_client.get(url, headers={"HX-Request": "true"})
    assert panel.status_code == 200
    body = panel.content.decode()
    assert "<html" not in body and 'id="monitor-liquidations"' in body
    assert "alpha-student-1" in body


def test_classroom_list_links_to_the_monitor(world, alpha_client):
    listing = alpha_client.get(reverse("admin:accounts_classroom_changelist"))
    url = reverse("admin:accounts_classroom_monitor", args=[world.alpha_class.pk])
    assert url.encode() in listing.content


def test_the_monitor_shows_numbers_as_the_students_pages_do(world, alpha_client):
    """Same filters, so an instructor and a student read the same collateral, the same
    liquidation price on the tick and the same margin ratio to two decimals."""
    from positions.models import Position
    from positions.selectors import position_valuation
    from web.templatetags.ringfence import money, risk_price, share_pct

    position = Position.objects.get(account__classroom=world.alpha_class, status="open")
    valuation = position_valuation(position)
    url = reverse("admin:accounts_classroom_monitor", args=[world.alpha_class.pk])
    row = alpha_client.get(url, headers={"HX-Request": "true"}).content.decode()
    row = row.split(f"#{position.pk} ", 1)[1].split("</tr>", 1)[0]
    currency = world.alpha_class.currency
    assert f"<td>{money(valuation.collateral, currency)}</td>" in row
    assert f"<td>{risk_price(position.liquidation_price, position)}</td>" in row
    assert f"<td>{share_pct(valuation.margin_ratio)}</td>" in row


def test_the_long_short_table_shows_the_mark_on_the_tick(world, alpha_client):
    from web.templatetags.ringfence import price

    btc = Instrument.objects.get(classroom=world.alpha_class)
    Instrument.objects.filter(pk=btc.pk).update(mark_price=Decimal("61234.5"))
    btc.refresh_from_db()
    url = reverse("admin:accounts_classroom_monitor", args=[world.alpha_class.pk])
    panel = alpha_client.get(url, headers={"HX-Request": "true"}).content.decode()
    table = panel.split('id="monitor-imbalance"', 1)[1].split("</table>", 1)[0]
    row = table.split(f"<td>{btc.symbol}</td>", 1)[1].split("</tr>", 1)[0]
    assert row.startswith(f"<td>{price(btc.mark_price, btc)}</td>")  # 61,234.5 on a 0.1 tick


def test_the_engines_recent_errors_are_on_the_monitor_for_this_classroom_only(world, alpha_client):
    """A position the engine failed to settle stays open for the next tick; the instructor
    watching the class must see that the engine is failing, not only that it beats."""
    from datetime import timedelta

    from django.utils import timezone

    alpha_btc = Instrument.objects.get(classroom=world.alpha_class)
    now = timezone.now()
    EngineHeartbeat.objects.create(
        instrument=alpha_btc,
        started_at=now - timedelta(seconds=3),
        errors="liquidation of position 41: <deadlock detected>",
    )
    EngineHeartbeat.objects.create(
        instrument=alpha_btc, started_at=now - timedelta(hours=2), errors="old and mended"
    )
    url = reverse("admin:accounts_classroom_monitor", args=[world.alpha_class.pk])
    panel = alpha_client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert 'id="monitor-engine-errors"' in panel
    assert "liquidation of position 41: &lt;deadlock detected&gt;" in panel
    assert alpha_btc.symbol in panel.split('id="monitor-engine-errors"', 1)[1]
    assert "old and mended" not in panel
    bravo_client = Client()
    bravo_client.force_login(world.bravo)
    bravo_url = reverse("admin:accounts_classroom_monitor", args=[world.bravo_class.pk])
    bravo_panel = bravo_client.get(bravo_url, headers={"HX-Request": "true"}).content.decode()
    assert "deadlock" not in bravo_panel
    assert 'id="monitor-engine-errors"' not in bravo_panel
