"""The live class monitor: a page an instructor projects while the market moves.

The page polls itself with HTMX; an HTMX request gets only the panel partial.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.models import Classroom, ClassroomPocket
from accounts.money import ZERO, money
from liquidation.models import AdlFill, EngineHeartbeat, LiquidationEvent, MarginCall
from positions.models import Position, Side
from positions.selectors import Valuation, position_valuation, with_valuation_data

__all__ = ["PermissionDenied", "classroom_monitor", "monitor_snapshot"]

POSITIONS_SHOWN = 50
EVENTS_SHOWN = 15
# Ticks whose errors the monitor shows: the newest few of the last ten minutes. A position
# the engine failed to settle stays open for the next tick, so a failing engine still beats.
ENGINE_ERRORS_SHOWN = 5
ENGINE_ERRORS_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class Imbalance:
    symbol: str
    mark_price: Decimal | None
    tick_size: Decimal
    long_count: int
    long_quantity: Decimal
    short_count: int
    short_quantity: Decimal

    @property
    def net_quantity(self) -> Decimal:
        return self.long_quantity - self.short_quantity

    @property
    def long_share_pct(self) -> Decimal | None:
        total = self.long_quantity + self.short_quantity
        return money(self.long_quantity / total * 100) if total else None


@dataclass(frozen=True)
class MonitorSnapshot:
    classroom: Classroom
    now: Any
    positions: list[tuple[Position, Valuation]]
    open_positions: int
    liquidations: list[LiquidationEvent]
    liquidation_count: int
    margin_calls: list[MarginCall]
    insurance_fund: Decimal
    adl_fills: list[AdlFill]
    imbalances: list[Imbalance]
    heartbeat_age_seconds: Decimal | None
    engine_errors: list[EngineHeartbeat]


def _distance_key(item: tuple[Position, Valuation]) -> tuple[int, Decimal]:
    distance = item[1].distance_to_liquidation_pct
    return (1, ZERO) if distance is None else (0, distance)


def monitor_snapshot(classroom: Classroom) -> MonitorSnapshot:
    """What the monitor shows, read in a bounded number of queries."""
    now = timezone.now()
    open_qs = Position.objects.filter(
        account__classroom_id=classroom.pk, status=Position.Status.OPEN
    )
    valued = [
        (p, position_valuation(p))
        for p in with_valuation_data(open_qs).select_related("account__user")
    ]
    valued.sort(key=_distance_key)
    insurance = (
        ClassroomPocket.objects.filter(
            classroom_id=classroom.pk, kind=ClassroomPocket.Kind.INSURANCE
        )
        .values_list("balance", flat=True)
        .first()
    )
    imbalances = [
        Imbalance(
            symbol=row["instrument__symbol"],
            mark_price=row["instrument__mark_price"],
            tick_size=row["instrument__tick_size"],
            long_count=row["long_count"],
            long_quantity=row["long_quantity"] or ZERO,
            short_count=row["short_count"],
            short_quantity=row["short_quantity"] or ZERO,
        )
        for row in open_qs.values(
            "instrument__symbol", "instrument__mark_price", "instrument__tick_size"
        )
        .annotate(
            long_count=Count("pk", filter=Q(side=Side.LONG)),
            long_quantity=Sum("quantity", filter=Q(side=Side.LONG)),
            short_count=Count("pk", filter=Q(side=Side.SHORT)),
            short_quantity=Sum("quantity", filter=Q(side=Side.SHORT)),
        )
        .order_by("instrument__symbol")
    ]
    beat = (
        EngineHeartbeat.objects.filter(instrument__classroom_id=classroom.pk)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    liquidations = LiquidationEvent.objects.filter(classroom_id=classroom.pk)
    return MonitorSnapshot(
        classroom=classroom,
        now=now,
        positions=valued[:POSITIONS_SHOWN],
        open_positions=len(valued),
        liquidations=list(
            liquidations.select_related("position__instrument", "position__account__user")[
                :EVENTS_SHOWN
            ]
        ),
        liquidation_count=liquidations.count(),
        margin_calls=list(
            MarginCall.objects.filter(classroom_id=classroom.pk).select_related(
                "position__instrument", "position__account__user"
            )[:EVENTS_SHOWN]
        ),
        insurance_fund=insurance if insurance is not None else ZERO,
        adl_fills=list(
            AdlFill.objects.filter(liquidation__classroom_id=classroom.pk).select_related(
                "position__instrument", "position__account__user"
            )[:EVENTS_SHOWN]
        ),
        imbalances=imbalances,
        # Never negative: a worker whose clock runs a little ahead of this server's stamps
        # its heartbeat "in the future", and that heartbeat is one from just now.
        heartbeat_age_seconds=None
        if beat is None
        else Decimal(str(round(max((now - beat).total_seconds(), 0.0), 1))),
        engine_errors=list(
            EngineHeartbeat.objects.filter(
                instrument__classroom_id=classroom.pk,
                started_at__gte=now - ENGINE_ERRORS_WINDOW,
            )
            .exclude(errors="")
            .select_related("instrument")
            .order_by("-started_at")[:ENGINE_ERRORS_SHOWN]
        ),
    )


def classroom_monitor(
    request: HttpRequest, *, classroom: Classroom, model_admin: Any
) -> HttpResponse:
    """The monitor page, or only its panel when HTMX asks for a refresh."""
    context = {"snapshot": monitor_snapshot(classroom), "classroom": classroom}
    if getattr(request, "htmx", False):
        return TemplateResponse(request, "admin/ringfence/_monitor_panel.html", context)
    context.update(
        model_admin.admin_site.each_context(request),
        opts=model_admin.model._meta,
        title=f"Live monitor: {classroom.name}",
    )
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/ringfence/monitor.html", context)
