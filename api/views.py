"""The REST API for classroom bots: thin views over the same services and selectors as the pages.

Every queryset starts from a ``*_for_user`` selector, so another student's id is simply
not found; every write calls a ``positions.services`` function, so no money moves here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from accounts import errors
from accounts.models import Classroom, Membership, TradingAccount, User
from accounts.money import ZERO, towards_entry
from accounts.services import clean_amount
from api import serializers as s
from api.exceptions import error_body
from api.models import ApiKey
from api.pagination import NewestFirst, OldestFirst, PriceHistory, whole_number
from api.throttling import CountsRefusedRequests
from liquidation import performance
from liquidation.models import LiquidationEvent, MarginCall, PriceTick
from positions import selectors, services
from positions.models import Instrument, Order, Position, with_net_result

MAX_ID = 2**63 - 1
SYMBOL_LENGTH = Instrument._meta.get_field("symbol").max_length or 20
CLIENT_ORDER_ID_LENGTH = Order._meta.get_field("client_order_id").max_length or 64


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    described = {
        400: "The request is not valid (see `error.code` and `error.fields`).",
        401: "No key, or an invalid, revoked or expired key.",
        403: "The key may not do this (a read-only key writing).",
        404: "No such object among yours.",
        409: "The rules refuse it now (balance, trading window, state).",
        429: "Throttled: wait for `Retry-After` seconds.",
    }
    return {code: OpenApiResponse(s.ErrorSerializer, description=described[code]) for code in codes}


READ_ERRORS = _errors(400, 401, 404, 429)
WRITE_ERRORS = _errors(400, 401, 403, 404, 409, 429)

ID_PARAM = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="Object id.")


def _id(value: Any, *, field: str | None = None, what: str = "object") -> int:
    """An id from a path or query parameter; anything out of range is simply not found."""
    number = whole_number(value)
    if number is None:
        raise errors.DomainError("Use a whole number.", field=field or "id")
    if not 1 <= number <= MAX_ID:
        raise errors.NotFound(f"No such {what}.", field=field)
    return number


def _owned(queryset: QuerySet[Any], pk: Any, what: str) -> Any:
    obj = queryset.filter(pk=_id(pk, what=what)).first()
    if obj is None:
        raise errors.NotFound(f"No such {what}.")
    return obj


class ApiView(CountsRefusedRequests, generics.GenericAPIView):
    # Base of every endpoint: bearer key or browser session, throttled per key.

    # False on endpoints that change nothing whatever their method (the order preview).
    writes = True

    # Fields that the services name otherwise than this endpoint's request does.
    request_fields: dict[str, str] = {}

    # The query parameters each method reads (HEAD as GET). Any other is refused rather than
    # ignored, as unknown body fields are: ignored, ?symbol= on the fills would answer every
    # symbol's, and a misspelt ?acount= every account's, as if they were what was asked for.
    query_params: dict[str, tuple[str, ...]] = {}

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, errors.DomainError) and exc.field in self.request_fields:
            exc.field = self.request_fields[exc.field]
        return super().handle_exception(exc)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # The views read one value of each parameter: ?symbol=A&symbol=B would quietly
        # become a filter on B alone.
        for name, values in request.query_params.lists():
            if len(values) > 1:
                raise errors.DomainError(f"Send {name} once.", field=name)
        method = "get" if request.method == "HEAD" else (request.method or "").lower()
        if method != "options":
            read = self.query_params.get(method, ())
            unknown = sorted(name for name in request.query_params if name not in read)
            if unknown:
                raise ValidationError({name: ["Unknown parameter."] for name in unknown})

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        rate_limit = getattr(request, "rate_limit", None)  # set by the throttle, if it counted
        if rate_limit is not None:
            for header, value in rate_limit.headers().items():
                response[header] = value
        return response

    @property
    def user(self) -> User:
        """The caller; every view below runs only for an authenticated user."""
        return cast(User, self.request.user)

    def account_for(self, account_id: Any) -> TradingAccount:
        account = (
            selectors.accounts_for_user(self.user)
            .filter(pk=_id(account_id, field="account", what="trading account"))
            .first()
        )
        if account is None:
            raise errors.NotFound("No such trading account.", field="account")
        return account

    def instrument_for(self, account: TradingAccount, symbol: str) -> Instrument:
        instrument = (
            selectors.instruments_for_user(self.user)
            .filter(classroom_id=account.classroom_id, symbol__iexact=symbol.strip())
            .first()
        )
        if instrument is None:
            raise errors.NotFound(
                f"No instrument {symbol!r} in this account's classroom.", field="symbol"
            )
        return instrument

    def one_instrument(self, symbol: str, *, with_tiers: bool = True) -> Instrument:
        """The caller's instrument ``symbol`` (any letter case), of ``?classroom=`` when it
        trades in several of the caller's classrooms; ``with_tiers`` reads its margin tiers
        too (one more query)."""
        if len(symbol) > SYMBOL_LENGTH or not symbol.isprintable():
            # No instrument has such a symbol, and PostgreSQL refuses a NUL in a query.
            raise errors.NotFound("No such instrument in your classrooms.")
        instruments = selectors.instruments_for_user(self.user).filter(symbol__iexact=symbol)
        if not with_tiers:
            instruments = instruments.prefetch_related(None)
        raw = self.request.query_params.get("classroom")
        if raw not in (None, ""):
            instruments = instruments.filter(classroom_id=_id(raw, field="classroom"))
        found = list(instruments[:2])
        if not found:
            raise errors.NotFound(f"No instrument {symbol!r} in your classrooms.")
        if len(found) > 1:
            raise errors.DomainError(
                f"{symbol} is traded in several of your classrooms; pass ?classroom=<id>.",
                field="classroom",
            )
        return found[0]

    def filter_account(self, queryset: QuerySet[Any], lookup: str = "account_id") -> QuerySet[Any]:
        raw = self.request.query_params.get("account")
        if raw in (None, ""):
            return queryset
        return queryset.filter(**{lookup: self.account_for(raw).pk})

    def filter_position(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Only the rows of ``?position=``, one of the caller's positions."""
        raw = self.request.query_params.get("position")
        if raw in (None, ""):
            return queryset
        position_id = _id(raw, field="position", what="position")
        if not selectors.positions_for_user(self.user).filter(pk=position_id).exists():
            raise errors.NotFound("No such position.", field="position")
        return queryset.filter(position_id=position_id)

    def text_param(self, name: str, *, max_length: int) -> str | None:
        """A text query parameter, stripped; None when absent or empty."""
        raw = (self.request.query_params.get(name) or "").strip()
        if not raw:
            return None
        if len(raw) > max_length or not raw.isprintable():
            raise errors.DomainError(
                f"{name} is at most {max_length} printable characters.", field=name
            )
        return raw

    def filter_symbol(
        self, queryset: QuerySet[Any], lookup: str = "instrument__symbol__iexact"
    ) -> QuerySet[Any]:
        symbol = self.text_param("symbol", max_length=SYMBOL_LENGTH)
        return queryset if symbol is None else queryset.filter(**{lookup: symbol})


ACCOUNT_PARAM = OpenApiParameter(
    "account", OpenApiTypes.INT, description="Only this trading account of yours."
)
SYMBOL_PARAM = OpenApiParameter(
    "symbol", OpenApiTypes.STR, description="Only this instrument (any letter case)."
)
POSITION_PARAM = OpenApiParameter(
    "position",
    OpenApiTypes.INT,
    description="Only those of this position of yours: its fills, or the orders that opened or "
    "reduce it.",
)
CLIENT_ORDER_ID_PARAM = OpenApiParameter(
    "client_order_id",
    OpenApiTypes.STR,
    description="Only the order you placed with this client_order_id, to find it after a "
    "lost answer without placing it again.",
)


def account_data(overview: selectors.AccountOverview) -> dict[str, Any]:
    account = overview.account
    return {
        "id": account.pk,
        "classroom": account.classroom_id,
        "classroom_name": account.classroom.name,
        "currency": account.classroom.currency,
        "balance": overview.balance,
        "collateral_locked": overview.collateral_locked,
        "order_margin": overview.order_margin,
        "equity": overview.equity,
        "funded": overview.funded,
        "unrealized_pnl": overview.unrealized_pnl,
        "realized_pnl": overview.realized_pnl,
        "fees_paid": overview.fees_paid,
        "return_pct": overview.return_pct,
        "trading_frozen": account.trading_frozen,
        "max_leverage": account.classroom.max_leverage,
        "trading_open": account.classroom.is_trading_open(),
        "trading_opens_at": account.classroom.trading_opens_at,
        "trading_closes_at": account.classroom.trading_closes_at,
    }


# --- health, me, accounts -----------------------------------------------------------------


class HealthView(ApiView):
    """The cheapest endpoint: whether the API answers (also the benchmark's baseline)."""

    permission_classes = [AllowAny]

    @extend_schema(responses={200: s.HealthSerializer, **_errors(400, 401, 429)}, tags=["meta"])
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class MeView(ApiView):
    """Who you are and your trading accounts."""

    @extend_schema(responses={200: s.MeSerializer, **_errors(400, 401, 429)}, tags=["accounts"])
    def get(self, request: Request) -> Response:
        accounts = selectors.accounts_for_user(self.user)
        scope = request.auth.scope if isinstance(request.auth, ApiKey) else None
        data = {
            "username": request.user.get_username(),
            "accounts": [account_data(selectors.account_overview(a)) for a in accounts],
            "key_scope": scope,
        }
        return Response(s.MeSerializer(data).data)


class AccountListView(ApiView):
    """Your trading accounts with their money at the current marks."""

    query_params = {"get": ("cursor", "limit")}

    serializer_class = s.AccountSerializer
    pagination_class = OldestFirst

    @extend_schema(
        responses={200: s.AccountSerializer(many=True), **READ_ERRORS}, tags=["accounts"]
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(selectors.accounts_for_user(self.user))
        rows = [account_data(selectors.account_overview(a)) for a in page or []]
        return self.get_paginated_response(s.AccountSerializer(rows, many=True).data)


class AccountDetailView(ApiView):
    """One of your trading accounts."""

    @extend_schema(
        parameters=[ID_PARAM],
        responses={200: s.AccountSerializer, **READ_ERRORS},
        tags=["accounts"],
    )
    def get(self, request: Request, pk: str) -> Response:
        account = _owned(selectors.accounts_for_user(self.user), pk, "trading account")
        return Response(s.AccountSerializer(account_data(selectors.account_overview(account))).data)


# --- instruments and prices -----------------------------------------------------------------


CLASSROOM_PARAM = OpenApiParameter(
    "classroom", OpenApiTypes.INT, description="Only this classroom of yours."
)


class InstrumentListView(ApiView):
    """The instruments of your classrooms, with margin tiers and mark prices."""

    query_params = {"get": ("classroom", "cursor", "limit")}

    serializer_class = s.InstrumentSerializer
    pagination_class = OldestFirst

    @extend_schema(
        parameters=[CLASSROOM_PARAM],
        responses={200: s.InstrumentSerializer(many=True), **READ_ERRORS},
        tags=["market"],
    )
    def get(self, request: Request) -> Response:
        instruments = selectors.instruments_for_user(self.user)
        raw = request.query_params.get("classroom")
        if raw not in (None, ""):
            instruments = instruments.filter(classroom_id=_id(raw, field="classroom"))
        page = self.paginate_queryset(instruments)
        return self.get_paginated_response(s.InstrumentSerializer(page, many=True).data)


class InstrumentDetailView(ApiView):
    """One instrument of your classrooms by its symbol (in any letter case), with its margin
    tiers and mark price: what a bot polls for the mark it trades on."""

    query_params = {"get": ("classroom",)}

    @extend_schema(
        parameters=[
            OpenApiParameter("symbol", OpenApiTypes.STR, OpenApiParameter.PATH),
            CLASSROOM_PARAM,
        ],
        responses={200: s.InstrumentSerializer, **READ_ERRORS},
        tags=["market"],
    )
    def get(self, request: Request, symbol: str) -> Response:
        return Response(s.InstrumentSerializer(self.one_instrument(symbol)).data)


LATEST_MARKS = PriceHistory.max_page_size


class PriceHistoryView(ApiView):
    """Mark price history of an instrument, oldest first (``?since=`` to get only new marks,
    ``?latest=N`` for the N newest ones)."""

    query_params = {"get": ("since", "latest", "classroom", "cursor", "limit")}

    serializer_class = s.PriceTickSerializer
    pagination_class = PriceHistory

    @extend_schema(
        parameters=[
            OpenApiParameter("symbol", OpenApiTypes.STR, OpenApiParameter.PATH),
            OpenApiParameter(
                "since", OpenApiTypes.DATETIME, description="Only marks after this moment."
            ),
            OpenApiParameter(
                "latest",
                int,
                description=f"Only the newest N marks (1 to {LATEST_MARKS}), still oldest "
                "first, on one page: what a signal on recent prices wants. Not with cursor "
                "or limit.",
            ),
            CLASSROOM_PARAM,
        ],
        responses={200: s.PriceTickSerializer(many=True), **READ_ERRORS},
        tags=["market"],
    )
    def get(self, request: Request, symbol: str) -> Response:
        instrument = self.one_instrument(symbol, with_tiers=False)
        ticks = PriceTick.objects.filter(instrument_id=instrument.pk)
        since = self._since(request.query_params.get("since"))
        if since is not None:
            ticks = ticks.filter(created_at__gt=since)
        latest = self._latest(request)
        if latest is not None:
            # The history runs oldest first over pages of at most 1000 marks, so without this a
            # bot that wants the last few marks would walk the whole history to reach them.
            newest = list(ticks.order_by("-id")[:latest])
            results = s.PriceTickSerializer(reversed(newest), many=True).data
            return Response({"next": None, "previous": None, "results": results})
        page = self.paginate_queryset(ticks)
        return self.get_paginated_response(s.PriceTickSerializer(page, many=True).data)

    @staticmethod
    def _latest(request: Request) -> int | None:
        raw = request.query_params.get("latest") or ""
        if not raw:
            return None
        if request.query_params.get("cursor") or request.query_params.get("limit"):
            raise errors.DomainError(
                "latest is one page of the newest marks: send it without cursor or limit.",
                field="latest",
            )
        latest = whole_number(raw) or 0
        if not 1 <= latest <= LATEST_MARKS:
            raise errors.DomainError(
                f"latest is a whole number from 1 to {LATEST_MARKS}.", field="latest"
            )
        return latest

    @staticmethod
    def _since(raw: str | None) -> datetime | None:
        if not raw:
            return None
        try:
            value = parse_datetime(raw.replace(" ", "+"))  # a '+' of an offset sent unescaped
        except ValueError:
            value = None
        if value is None:
            raise errors.DomainError(
                "Use an ISO 8601 date and time, e.g. 2030-01-31T12:00:00Z.", field="since"
            )
        if timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
        # ISO 8601 offsets go to 23:59, PostgreSQL's to 15:59: compare in UTC, where a moment
        # at either end of the calendar may fall before the first date or after the last.
        try:
            return value.astimezone(UTC)
        except OverflowError:
            return None if value.year == datetime.min.year else datetime.max.replace(tzinfo=UTC)


# --- orders ------------------------------------------------------------------------------------


class OrderPreviewView(ApiView):
    """What an opening order would cost and risk, without placing it."""

    writes = False
    request_fields = {"instrument": "symbol"}

    @extend_schema(
        request=s.PlaceOrderSerializer,
        responses={200: s.PreviewSerializer, **_errors(400, 401, 404, 409, 429)},
        tags=["orders"],
    )
    def post(self, request: Request) -> Response:
        body = s.PlaceOrderSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data["reduce_only"]:
            raise errors.InvalidOrder(
                "A preview is for opening orders; a reduce-only order frees margin.",
                field="reduce_only",
            )
        account = self.account_for(data["account"])
        instrument = self.instrument_for(account, data["symbol"])
        prices = services.clean_order_prices(
            instrument=instrument,
            side=data["side"],
            type=data["type"],
            price=data.get("price"),
            stop_price=data.get("stop_price"),
        )
        quote = services.quote_open(
            account=account,
            instrument=instrument,
            side=data["side"],
            quantity=data["quantity"],
            leverage=data["leverage"],
            extra_collateral=data.get("extra_collateral") or ZERO,
            entry_price=prices.entry_price,
            take_profit=data.get("take_profit"),
            stop_loss=data.get("stop_loss"),
        )
        payload = {**quote.__dict__, "symbol": instrument.symbol, "side": data["side"]}
        for name in ("liquidation_price", "bankruptcy_price"):  # as positions show them
            payload[name] = towards_entry(
                payload[name], side=data["side"], tick=instrument.tick_size
            )
        return Response(s.PreviewSerializer(payload).data)


ORDER_STATUS_PARAM = OpenApiParameter(
    "status", OpenApiTypes.STR, enum=Order.Status.values, description="Only orders in this state."
)


def _check_same_order(order: Order, data: dict[str, Any]) -> None:
    """Refuse a client_order_id repeated with other terms than its first order's.

    Returning the first order would tell the bot that the second one was placed. Leverage is
    the position's own on a reduce-only order, and only such an order names a position.
    """
    differ = [
        name
        for name, same in (
            ("symbol", data["symbol"].strip().lower() == order.instrument.symbol.lower()),
            ("side", data["side"] == order.side),
            ("type", data["type"] == order.type),
            ("quantity", services.same_decimal(data["quantity"], order.quantity)),
            ("leverage", order.reduce_only or data["leverage"] == order.leverage),
            ("price", services.same_decimal(data.get("price"), order.price)),
            ("stop_price", services.same_decimal(data.get("stop_price"), order.stop_price)),
            ("reduce_only", data["reduce_only"] == order.reduce_only),
            ("position", not order.reduce_only or data.get("position") == order.position_id),
            ("take_profit", services.same_decimal(data.get("take_profit"), order.take_profit)),
            ("stop_loss", services.same_decimal(data.get("stop_loss"), order.stop_loss)),
            (
                "extra_collateral",
                services.same_decimal(data.get("extra_collateral") or 0, order.extra_collateral),
            ),
        )
        if not same
    ]
    if differ:
        message = (
            f"client_order_id {order.client_order_id!r} was used for order {order.pk}, which "
            f"has another {', '.join(differ)}; send a new client_order_id for a new order."
        )
        raise errors.ClientOrderIdReused(message, field="client_order_id")


# What narrows DELETE /orders/. Another filter of the list (?position=, ?client_order_id=),
# ignored there, would widen a cancel of a few orders to every resting one.
CANCEL_FILTERS = ("account", "symbol")


class OrderListView(ApiView):
    """Your orders, newest first; POST places one (market orders fill at once); DELETE
    cancels every resting one."""

    query_params = {
        "get": ("status", "account", "symbol", "position", "client_order_id", "cursor", "limit"),
        "delete": CANCEL_FILTERS,
    }

    serializer_class = s.OrderSerializer
    pagination_class = NewestFirst
    request_fields = {"instrument": "symbol"}

    @extend_schema(
        parameters=[
            ORDER_STATUS_PARAM,
            ACCOUNT_PARAM,
            SYMBOL_PARAM,
            POSITION_PARAM,
            CLIENT_ORDER_ID_PARAM,
        ],
        responses={200: s.OrderSerializer(many=True), **READ_ERRORS},
        tags=["orders"],
    )
    def get(self, request: Request) -> Response:
        orders = self.filter_symbol(self.filter_account(selectors.orders_for_user(self.user)))
        orders = self.filter_position(orders)
        client_order_id = self.text_param("client_order_id", max_length=CLIENT_ORDER_ID_LENGTH)
        if client_order_id is not None:
            orders = orders.filter(client_order_id=client_order_id)
        wanted = request.query_params.get("status")
        if wanted not in (None, ""):
            if wanted not in Order.Status.values:
                raise errors.DomainError(
                    f"status is one of {', '.join(Order.Status.values)}.", field="status"
                )
            orders = orders.filter(status=wanted)
        page = self.paginate_queryset(orders)
        return self.get_paginated_response(s.OrderSerializer(page, many=True).data)

    @extend_schema(
        request=s.PlaceOrderSerializer,
        responses={
            201: s.OrderSerializer,
            200: OpenApiResponse(
                s.OrderSerializer, description="The client_order_id was seen before: the original."
            ),
            **WRITE_ERRORS,
            409: OpenApiResponse(
                s.ErrorSerializer,
                description="The rules refuse it now (balance, trading window, state), or "
                "client_order_id_reused: the client_order_id belongs to an order with other "
                "terms (its id is in the message).",
            ),
        },
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                response=[201],
                description="The new order's own URL (GET it, DELETE or PATCH it).",
            )
        ],
        tags=["orders"],
    )
    def post(self, request: Request) -> Response:
        body = s.PlaceOrderSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        position_id = data.get("position")
        # The service checks that the account is the caller's and finds the symbol in its
        # classroom, under the account's lock (404s as account_for/instrument_for give).
        order = services.order_place(
            account_id=_id(data["account"], field="account", what="trading account"),
            owner_id=self.user.pk,
            symbol=data["symbol"],
            side=data["side"],
            type=data["type"],
            quantity=data["quantity"],
            leverage=data["leverage"],
            price=data.get("price"),
            stop_price=data.get("stop_price"),
            extra_collateral=data.get("extra_collateral") or ZERO,
            take_profit=data.get("take_profit"),
            stop_loss=data.get("stop_loss"),
            reduce_only=data["reduce_only"],
            position_id=None if position_id is None else _id(position_id, field="position"),
            client_order_id=data["client_order_id"],
        )
        if getattr(order, "repeated", False):
            _check_same_order(order, data)
            return Response(s.OrderSerializer(order).data)
        return Response(
            s.OrderSerializer(order).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("api:order-detail", args=[order.pk], request=request)},
        )

    @extend_schema(
        parameters=[ACCOUNT_PARAM, SYMBOL_PARAM],
        responses={200: s.CancelledOrdersSerializer, **WRITE_ERRORS},
        tags=["orders"],
        operation_id="orders_cancel_all",
        description="Cancel every resting order of yours, or only those of ?account= and "
        "?symbol=. An order that fills or triggers meanwhile is left as it is, and so is one "
        "whose hold the free balance could not take back (amount_too_large). Any other query "
        "parameter (position, client_order_id, ...) is refused with invalid_request.",
    )
    def delete(self, request: Request) -> Response:
        mine = self.filter_symbol(self.filter_account(selectors.orders_for_user(self.user)))
        resting = mine.filter(status=Order.Status.RESTING).order_by("pk")
        cancelled = []
        for order_id in resting.values_list("pk", flat=True):
            try:
                cancelled.append(services.order_cancel(order_id=order_id).pk)
            except errors.OrderNotCancellable:
                continue  # filled or triggered between the listing and its lock
            except errors.AmountTooLarge:
                continue  # its hold cannot come back into a free balance this full
        orders = mine.filter(pk__in=cancelled).order_by("pk")
        return Response(s.CancelledOrdersSerializer({"cancelled": orders}).data)


# What a PATCH of an order may change.
REPLACED_TERMS = ("quantity", "price", "stop_price")


class OrderDetailView(ApiView):
    """One of your orders; DELETE cancels it while it rests, PATCH replaces it with a new
    quantity or price."""

    @extend_schema(
        parameters=[ID_PARAM], responses={200: s.OrderSerializer, **READ_ERRORS}, tags=["orders"]
    )
    def get(self, request: Request, pk: str) -> Response:
        order = _owned(selectors.orders_for_user(self.user), pk, "order")
        return Response(s.OrderSerializer(order).data)

    @extend_schema(
        parameters=[ID_PARAM],
        request=None,
        responses={200: s.OrderSerializer, **WRITE_ERRORS},
        tags=["orders"],
    )
    def delete(self, request: Request, pk: str) -> Response:
        order = _owned(selectors.orders_for_user(self.user), pk, "order")
        order = services.order_cancel(order_id=order.pk)
        return Response(s.OrderSerializer(order).data)

    @extend_schema(
        parameters=[ID_PARAM],
        request=s.ReplaceOrderSerializer,
        responses={
            200: OpenApiResponse(
                s.OrderSerializer,
                description="The new order (its replaces is the old one's id): resting, or "
                "filled if the market has reached its new price. Also the answer to a retry "
                "whose client_order_id was seen before: the replacement happened once.",
            ),
            **WRITE_ERRORS,
            409: OpenApiResponse(
                s.ErrorSerializer,
                description="The order no longer rests (order_not_cancellable; the message "
                "names the order that replaced it, if one did), the rules refuse the new order "
                "(balance, trading window, state; the old one keeps resting), or "
                "client_order_id_reused.",
            ),
        },
        tags=["orders"],
        operation_id="orders_replace",
        description="Replace a resting order with a new quantity, limit price or stop price, "
        "as an exchange amends an order: in one step the old order is cancelled (its hold "
        "comes back) and a new one with the old one's other terms is placed. When the new "
        "order is refused, nothing changes.",
    )
    def patch(self, request: Request, pk: str) -> Response:
        order = _owned(selectors.orders_for_user(self.user), pk, "order")
        body = s.ReplaceOrderSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            replacement = services.order_replace(
                order_id=order.pk,
                quantity=data.get("quantity"),
                price=data.get("price"),
                stop_price=data.get("stop_price"),
                client_order_id=data["client_order_id"],
            )
        except errors.DomainError as exc:
            # The new order keeps the old one's leverage, take-profit and stop-loss, which a
            # PATCH cannot send: a bot told to fix one of them could not. What breaks them is
            # the quantity or price it sent, so the refusal is about that one.
            if exc.field is not None and exc.field not in body.fields:
                sent = [name for name in REPLACED_TERMS if data.get(name) is not None]
                exc.field = sent[0] if len(sent) == 1 else None
            raise
        return Response(s.OrderSerializer(replacement).data)


# --- positions ---------------------------------------------------------------------------------


def positions_shown(user: User) -> QuerySet[Position]:
    """The caller's positions with all that a position answer shows."""
    return with_net_result(selectors.positions_for_user(user))


def valued(position: Position) -> Position:
    position.valuation = selectors.position_valuation(position)  # type: ignore[attr-defined]
    return position


POSITION_STATUS_PARAM = OpenApiParameter(
    "status",
    OpenApiTypes.STR,
    enum=Position.Status.values,
    description="Only positions in this state.",
)


class PositionListView(ApiView):
    """Your positions, newest first, each valued at the current mark."""

    query_params = {"get": ("status", "account", "symbol", "cursor", "limit")}

    serializer_class = s.PositionSerializer
    pagination_class = NewestFirst

    @extend_schema(
        parameters=[POSITION_STATUS_PARAM, ACCOUNT_PARAM, SYMBOL_PARAM],
        responses={200: s.PositionSerializer(many=True), **READ_ERRORS},
        tags=["positions"],
    )
    def get(self, request: Request) -> Response:
        positions = self.filter_symbol(self.filter_account(positions_shown(self.user)))
        wanted = request.query_params.get("status")
        if wanted not in (None, ""):
            if wanted not in Position.Status.values:
                raise errors.DomainError(
                    f"status is one of {', '.join(Position.Status.values)}.", field="status"
                )
            positions = positions.filter(status=wanted)
        page = [valued(p) for p in self.paginate_queryset(positions) or []]
        return self.get_paginated_response(s.PositionSerializer(page, many=True).data)


class PositionDetailView(ApiView):
    """One of your positions, valued at the current mark."""

    @extend_schema(
        parameters=[ID_PARAM],
        responses={200: s.PositionSerializer, **READ_ERRORS},
        tags=["positions"],
    )
    def get(self, request: Request, pk: str) -> Response:
        position = _owned(positions_shown(self.user), pk, "position")
        return Response(s.PositionSerializer(valued(position)).data)


class PositionWriteView(ApiView):
    def owned_position_id(self, pk: str) -> int:
        ids = selectors.positions_for_user(self.user).values_list("pk", flat=True)
        return int(_owned(Position.objects.filter(pk__in=ids), pk, "position").pk)

    def respond(self, position_id: int) -> Response:
        position = positions_shown(self.user).get(pk=position_id)
        return Response(s.PositionSerializer(valued(position)).data)


class PositionCloseView(PositionWriteView):
    """Close a position at market, all of it or ``quantity`` of it. With a
    ``client_order_id`` seen before on this close, nothing closes again: the answer is the
    position as it is now, as after the first try."""

    @extend_schema(
        parameters=[ID_PARAM],
        request=s.ClosePositionSerializer,
        responses={
            200: OpenApiResponse(
                s.PositionSerializer,
                description="The position after the close (also when the client_order_id was "
                "seen before: the close happened once).",
            ),
            **WRITE_ERRORS,
            409: OpenApiResponse(
                s.ErrorSerializer,
                description="The position is no longer open (position_not_open), the mark has "
                "reached its liquidation price (position_liquidating), client_order_id_reused: "
                "the client_order_id belongs to another order or to a close of another quantity "
                "(its id is in the message), or amount_too_large: the profit would carry the free "
                "balance or the position's realised PnL past 10^16 (the message says how much "
                "fits).",
            ),
        },
        tags=["positions"],
    )
    def post(self, request: Request, pk: str) -> Response:
        position_id = self.owned_position_id(pk)
        body = s.ClosePositionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.position_close(
            position_id=position_id,
            quantity=body.validated_data.get("quantity"),
            client_order_id=body.validated_data["client_order_id"],
        )
        return self.respond(position_id)


class PositionMarginView(PositionWriteView):
    """Add (positive ``amount``) or remove (negative) isolated margin. With a
    ``client_request_id`` seen before on this change, nothing moves again: the answer is the
    position as it is now, as after the first try."""

    @extend_schema(
        parameters=[ID_PARAM],
        request=s.MarginChangeSerializer,
        responses={
            200: OpenApiResponse(
                s.PositionSerializer,
                description="The position after the change (also when the client_request_id "
                "was seen before: the margin moved once).",
            ),
            **WRITE_ERRORS,
            409: OpenApiResponse(
                s.ErrorSerializer,
                description="The position is no longer open (position_not_open), the mark has "
                "reached its liquidation price (position_liquidating), insufficient_balance, "
                "margin_removal_too_large, client_request_id_reused: the client_request_id was "
                "used for another margin change (the message names it), or amount_too_large.",
            ),
        },
        tags=["positions"],
    )
    def post(self, request: Request, pk: str) -> Response:
        position_id = self.owned_position_id(pk)
        body = s.MarginChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        amount: Decimal = clean_amount(body.validated_data["amount"], allow_negative=True)
        request_id = body.validated_data["client_request_id"]
        if amount > 0:
            services.position_add_margin(
                position_id=position_id, amount=amount, client_request_id=request_id
            )
        else:
            services.position_remove_margin(
                position_id=position_id, amount=-amount, client_request_id=request_id
            )
        return self.respond(position_id)


class PositionTpslView(PositionWriteView):
    """Set the take-profit and the stop-loss of an open position: a field sent changes (null
    clears it), a field left out stays as it is."""

    @extend_schema(
        parameters=[ID_PARAM],
        request=s.TpslChangeSerializer,
        responses={200: s.PositionSerializer, **WRITE_ERRORS},
        tags=["positions"],
    )
    def post(self, request: Request, pk: str) -> Response:
        position_id = self.owned_position_id(pk)
        body = s.TpslChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.position_set_tpsl(
            position_id=position_id,
            take_profit=body.validated_data.get("take_profit", services.UNCHANGED),
            stop_loss=body.validated_data.get("stop_loss", services.UNCHANGED),
        )
        return self.respond(position_id)


@csrf_exempt
def unknown_endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
    """Any other path under /api/v1/: the endpoint it names with its trailing slash added or
    dropped (``/orders`` is ``/orders/``), else a JSON 404 in the API's error shape.

    Exempt from Django's CSRF check, which would answer a POST with an HTML 403: this view
    changes nothing, and the API views it hands over to check CSRF for session callers.
    """
    path = request.path_info
    try:
        match = resolve(path[:-1] if path.endswith("/") else f"{path}/")
    except Resolver404:
        match = None
    if match is not None and match.namespace == "api":
        return match.func(request, *match.args, **match.kwargs)
    return JsonResponse(
        error_body("not_found", "No such API endpoint; see /api/docs/."), status=404
    )


# --- fills and the account statement -----------------------------------------------------------


class FillListView(ApiView):
    """Your executions, newest first: every open, close, liquidation and auto-deleveraging fill
    at its price, with its fee and the PnL it realised."""

    query_params = {"get": ("account", "symbol", "position", "cursor", "limit")}

    serializer_class = s.FillSerializer
    pagination_class = NewestFirst

    @extend_schema(
        parameters=[ACCOUNT_PARAM, SYMBOL_PARAM, POSITION_PARAM],
        responses={200: s.FillSerializer(many=True), **READ_ERRORS},
        tags=["positions"],
    )
    def get(self, request: Request) -> Response:
        fills = self.filter_account(selectors.fills_for_user(self.user), "position__account_id")
        fills = self.filter_symbol(fills, "position__instrument__symbol__iexact")
        page = self.paginate_queryset(self.filter_position(fills))
        return self.get_paginated_response(s.FillSerializer(page, many=True).data)


class StatementView(ApiView):
    """Every movement of your free balances, newest first, such as the starting deposit and
    grants, margin and fee paid to open, what a close returns, margin added and removed, and
    what a resting order holds (order_hold) and gives back (order_release). Each entry is one
    leg of a balanced ledger transaction; an account's amounts add up to its free balance."""

    query_params = {"get": ("account", "cursor", "limit")}

    serializer_class = s.StatementEntrySerializer
    pagination_class = NewestFirst

    @extend_schema(
        parameters=[ACCOUNT_PARAM],
        responses={200: s.StatementEntrySerializer(many=True), **READ_ERRORS},
        tags=["accounts"],
    )
    def get(self, request: Request) -> Response:
        entries = self.filter_account(selectors.statement_for_user(self.user))
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(s.StatementEntrySerializer(page, many=True).data)


# --- liquidations, margin calls, leaderboard --------------------------------------------------


class LiquidationListView(ApiView):
    """Liquidations of your positions, newest first."""

    query_params = {"get": ("account", "cursor", "limit")}

    serializer_class = s.LiquidationSerializer
    pagination_class = NewestFirst

    @extend_schema(
        parameters=[ACCOUNT_PARAM],
        responses={200: s.LiquidationSerializer(many=True), **READ_ERRORS},
        tags=["positions"],
    )
    def get(self, request: Request) -> Response:
        mine = self.filter_account(selectors.positions_for_user(self.user))
        events = LiquidationEvent.objects.filter(position__in=mine.values("pk")).select_related(
            "position__instrument"
        )
        page = self.paginate_queryset(events)
        return self.get_paginated_response(s.LiquidationSerializer(page, many=True).data)


class MarginCallListView(ApiView):
    """Margin calls on your positions (ratio crossed 80%), newest first."""

    query_params = {"get": ("account", "cursor", "limit")}

    serializer_class = s.MarginCallSerializer
    pagination_class = NewestFirst

    @extend_schema(
        parameters=[ACCOUNT_PARAM],
        responses={200: s.MarginCallSerializer(many=True), **READ_ERRORS},
        tags=["positions"],
    )
    def get(self, request: Request) -> Response:
        mine = self.filter_account(selectors.positions_for_user(self.user))
        calls = MarginCall.objects.filter(position__in=mine.values("pk")).select_related(
            "position__instrument"
        )
        page = self.paginate_queryset(calls)
        return self.get_paginated_response(s.MarginCallSerializer(page, many=True).data)


class LeaderboardView(ApiView):
    """Ranking of a classroom you belong to: by return, or return per drawdown as it is set."""

    @extend_schema(
        parameters=[ID_PARAM],
        responses={200: s.LeaderboardSerializer, **READ_ERRORS},
        tags=["accounts"],
    )
    def get(self, request: Request, pk: str) -> Response:
        classroom_id = _id(pk, what="classroom")
        member = (
            Membership.objects.filter(user_id=self.user.pk, classroom_id=classroom_id).exists()
            or selectors.accounts_for_user(self.user).filter(classroom_id=classroom_id).exists()
        )
        if not member:
            raise errors.NotFound("No such classroom.")
        classroom = Classroom.objects.get(pk=classroom_id)
        rows = [
            {
                "rank": rank,
                "username": row.account.user.get_username(),
                "equity": row.equity,
                "return_pct": row.return_pct,
                "max_drawdown_pct": row.max_drawdown_pct,
                "liquidations": row.liquidations,
                "score": row.score,
                "is_you": row.account.user_id == self.user.pk,
            }
            for rank, row in enumerate(performance.leaderboard(classroom), start=1)
        ]
        data = {
            "classroom": classroom.pk,
            "classroom_name": classroom.name,
            "ranking": classroom.ranking,
            "results": rows,
        }
        return Response(s.LeaderboardSerializer(data).data)
