"""Learner pages: every view narrows to the user's own rows first, then calls a service."""

from __future__ import annotations

import csv
import json
from bisect import bisect_right
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from types import SimpleNamespace
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.errors import (
    ClientOrderIdReused,
    ClientRequestIdReused,
    DomainError,
    OrderNotCancellable,
)
from accounts.models import Classroom, TradingAccount
from accounts.money import ZERO, currency_places, exact_money_text, plain, towards_entry
from accounts.money import shown as shown_rounded
from accounts.services import NO_SUCH_JOIN_CODE, classroom_for_join_code, classroom_join
from accounts.spreadsheet import cell
from config.cache import note_cache_unreachable
from liquidation import performance
from liquidation.models import LiquidationEvent, MarginCall
from positions import services
from positions.models import Fill, Instrument, Order, Position
from positions.selectors import account_overview, accounts_for_user, position_valuation
from web import attempts, selectors
from web.context_processors import remember_account
from web.forms import (
    AdminPasswordChangeForm,
    CloseForm,
    JoinForm,
    MarginForm,
    OrderChangeForm,
    PasswordChangeForm,
    SignUpForm,
    TpSlForm,
    TradeForm,
    add_domain_error,
)
from web.templatetags import ringfence as shown
from web.templatetags.ringfence import price_places

# Recent losses shown with their isolation lesson on the dashboard.
DASHBOARD_LESSONS = 2
# An open position earns its lesson once it has lost this share of its collateral: a few
# cents of spread are not yet a story about isolation.
LESSON_LOSS_SHARE = Decimal("0.25")


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return render(request, "home.html")
    accounts = list(accounts_for_user(request.user)[:2])  # type: ignore[arg-type]
    if len(accounts) == 1:
        return redirect("dashboard", account_id=accounts[0].pk)
    return redirect("classrooms")


# The chosen password must not reach an error report (the request's POST is part of it).
@sensitive_post_parameters("password1", "password2")
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("classrooms")
    form = SignUpForm(request.POST or None)
    tries = attempts.join_code(request)
    try:
        if request.method == "POST" and not form.is_valid():
            # Say what is wrong with the code too, not only once the password is fixed.
            code = form.cleaned_data.get("join_code")
            if code and not tries.blocked() and classroom_for_join_code(code) is None:
                tries.failed()
                form.add_error("join_code", NO_SUCH_JOIN_CODE)
        elif request.method == "POST":
            try:
                if tries.blocked():
                    raise DomainError(attempts.TOO_MANY, field="join_code")
                with transaction.atomic():
                    user = form.save()
                    account = classroom_join(
                        user_id=user.pk, join_code=form.cleaned_data["join_code"]
                    )
            except DomainError as exc:
                if exc.code == "invalid_join_code":
                    tries.failed()
                add_domain_error(form, exc)
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                messages.success(request, f"Welcome to {account.classroom.name}.")
                return redirect("dashboard", account_id=account.pk)
    except attempts.Unavailable as exc:
        # Nothing was saved: the code is checked, and the user created, only once counted.
        note_cache_unreachable(request, exc)
        form.add_error("join_code", attempts.JOIN_UNAVAILABLE)
    return render(
        request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200
    )


class PasswordChange(auth_views.PasswordChangeView):
    """Django's password change, its old-password check counted as sign-ins are."""

    form_class = PasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        kwargs = super().get_form_kwargs()
        kwargs["request"] = self.request
        return kwargs


def admin_password_change(
    request: HttpRequest, extra_context: dict[str, Any] | None = None
) -> HttpResponseBase:
    """The admin's "Change password" page, as ``AdminSite.password_change`` builds it, with
    the counted form."""
    site = admin.site
    defaults: dict[str, Any] = {
        "form_class": AdminPasswordChangeForm,
        "success_url": reverse("admin:password_change_done", current_app=site.name),
        "extra_context": {**site.each_context(request), **(extra_context or {})},
    }
    if site.password_change_template is not None:
        defaults["template_name"] = site.password_change_template
    request.current_app = site.name
    return PasswordChange.as_view(**defaults)(request)


@login_required
def classrooms(request: HttpRequest) -> HttpResponse:
    form = JoinForm(request.POST or None)
    tries = attempts.join_code(request)
    try:
        if request.method == "POST" and form.is_valid():
            try:
                if tries.blocked():
                    raise DomainError(attempts.TOO_MANY, field="join_code")
                account = classroom_join(
                    user_id=int(request.user.pk or 0), join_code=form.cleaned_data["join_code"]
                )
            except DomainError as exc:
                if exc.code == "invalid_join_code":
                    tries.failed()
                add_domain_error(form, exc)
            else:
                messages.success(request, f"You joined {account.classroom.name}.")
                return redirect("dashboard", account_id=account.pk)
    except attempts.Unavailable as exc:
        # A code is tried only once counted; the page itself does not need the cache.
        note_cache_unreachable(request, exc)
        form.add_error("join_code", attempts.JOIN_UNAVAILABLE)
    accounts = accounts_for_user(request.user)  # type: ignore[arg-type]
    taught = (
        list(Classroom.objects.filter(instructor_id=request.user.pk).order_by("name"))
        if request.user.is_staff
        else []
    )
    return render(
        request,
        "web/classrooms.html",
        {"accounts": accounts, "form": form, "taught": taught},
        status=400 if form.errors else 200,
    )


# --- dashboard ----------------------------------------------------------------------


def _dashboard_context(account: TradingAccount) -> dict[str, Any]:
    overview = account_overview(account)
    liquidations = selectors.recent_liquidations(account)
    lessons = []  # (position, lesson, being liquidated: too late for more collateral)
    for event in liquidations[:DASHBOARD_LESSONS]:
        result = selectors.lesson_for(
            event.position, liquidation=event, collateral=event.collateral_lost
        )
        if result is not None:
            lessons.append((event.position, result, False))
    losing = [
        (p, v)
        for p, v in overview.open_positions
        if v.unrealized_pnl is not None and v.unrealized_pnl <= -v.collateral * LESSON_LOSS_SHARE
    ]
    losing.sort(key=lambda pv: pv[1].unrealized_pnl or ZERO)
    for position, valuation in losing[:DASHBOARD_LESSONS]:
        result = selectors.lesson_at_mark(
            position, valuation, free_balance=overview.balance, held_by_orders=overview.order_margin
        )
        if result is not None:
            lessons.append((position, result, valuation.liquidating))
    return {
        "account": account,
        "classroom": account.classroom,
        "currency": account.classroom.currency,
        "overview": overview,
        "instruments": list(selectors.classroom_instruments(account.classroom_id)),
        "orders": list(selectors.resting_orders(account)),
        "refused_orders": selectors.refused_when_triggered(account),
        "margin_calls": selectors.recent_margin_calls(account),
        "liquidations": liquidations,
        "lessons": lessons,
    }


@login_required
@require_GET
def dashboard(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    remember_account(request, account)
    return render(request, "web/dashboard.html", _dashboard_context(account))


@login_required
@require_GET
def dashboard_live(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    return render(request, "_partials/dashboard_live.html", _dashboard_context(account))


# --- trade ticket -------------------------------------------------------------------


def _max_leverage(account: TradingAccount, instruments: list[Instrument]) -> int:
    caps = [i.max_leverage for i in instruments] or [1]
    return min(account.classroom.max_leverage, max(caps))


def _instrument_id(text: str) -> int | None:
    """An instrument's id as a ticket or a link sends it; anything else (other scripts'
    digits, thousands of them) is None."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def _trade_form(request: HttpRequest, account: TradingAccount) -> TradeForm:
    data = request.POST if request.method == "POST" else None
    # The instrument a link (the dashboard's ticker) asks for, and the one a ticket sent.
    wanted = _instrument_id(request.GET.get("instrument", ""))
    sent = wanted if data is None else _instrument_id(data.get("instrument", ""))
    # Offered even if it is not open for trading (named so): the ticket stays on the
    # instrument the student chose rather than showing another one in its place.
    instruments = selectors.ticket_instruments(account, sent=sent).prefetch_related("tiers")
    initial: dict[str, Any] = {"leverage": min(10, _max_leverage(account, list(instruments)))}
    if wanted is not None:
        initial["instrument"] = wanted
    return TradeForm(
        data,
        instruments=instruments,
        max_leverage=_max_leverage(account, list(instruments)),
        initial=initial,
    )


def _quantity(form: TradeForm) -> Decimal | None:
    """The quantity asked for, or the notional turned into whole lots at the reference price."""
    data = form.cleaned_data
    if data.get("quantity"):
        return data["quantity"]
    instrument: Instrument = data["instrument"]
    reference = _entry_estimate(data, instrument)
    if reference is None:
        form.add_error("notional", f"{instrument.symbol} has no price yet.")
        return None
    lots = (data["notional"] / reference / instrument.lot_size).to_integral_value(ROUND_FLOOR)
    if lots <= 0:
        form.add_error("notional", "This notional is less than one lot.")
        return None
    return lots * instrument.lot_size


def _add_ticket_error(form: TradeForm, error: DomainError) -> None:
    """A service's refusal of the ticket, next to the field the student can change: the size
    of a ticket sized by its notional is refused next to the notional they typed, not next
    to the quantity they left empty."""
    if error.field == "quantity" and not form.cleaned_data.get("quantity"):
        error = DomainError(error.message, field="notional")
    add_domain_error(form, error)


def _check_price_grid(data: dict[str, Any]) -> None:
    """Every price typed in must sit on the tick grid."""
    for name in ("price", "stop_price", "take_profit", "stop_loss"):
        services.clean_price(data.get(name), instrument=data["instrument"], field=name)


def _same_ticket(order: Order, data: dict[str, Any], quantity: Decimal) -> bool:
    """Whether a ticket sent again asks for the order its one-time id placed the first time.
    A quantity given as a notional is left out: it follows the mark between two submits."""
    limit = data.get("price") if data["type"] == Order.Type.LIMIT else None
    stop = data.get("stop_price") if data["type"] == Order.Type.STOP else None
    return (
        not order.reduce_only
        and order.instrument_id == data["instrument"].pk
        and (order.side, order.type, order.leverage)
        == (data["side"], data["type"], data["leverage"])
        and (not data.get("quantity") or order.quantity == quantity)
        and (order.price, order.stop_price) == (limit, stop)
        and (order.take_profit, order.stop_loss) == (data.get("take_profit"), data.get("stop_loss"))
        and order.extra_collateral == (data.get("extra_collateral") or ZERO)
    )


def _outcome_since(order: Order) -> str | None:
    """What became of a ticket's first order since, if saying "Opened position" or "is
    resting" again would no longer be true: its position closed, or it left the book."""
    position = order.position
    if order.status == Order.Status.FILLED and position is not None and not position.is_open:
        ended = "liquidated" if position.status == Position.Status.LIQUIDATED else "closed"
        return f"its order opened position #{position.pk}, which has been {ended} since"
    if order.status not in (Order.Status.FILLED, Order.Status.RESTING):
        return f"its order #{order.pk} {services.order_state(order)}"
    return None


@login_required
def trade(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    remember_account(request, account)
    form = _trade_form(request, account)
    if request.method == "POST" and form.is_valid():
        quantity = _quantity(form)
        if quantity is not None:
            data = form.cleaned_data
            try:
                _check_price_grid(data)
                order = services.order_place(
                    account_id=account.pk,
                    instrument_id=data["instrument"].pk,
                    side=data["side"],
                    type=data["type"],
                    quantity=quantity,
                    leverage=data["leverage"],
                    price=data.get("price") if data["type"] == Order.Type.LIMIT else None,
                    stop_price=data.get("stop_price") if data["type"] == Order.Type.STOP else None,
                    extra_collateral=data.get("extra_collateral") or ZERO,
                    take_profit=data.get("take_profit"),
                    stop_loss=data.get("stop_loss"),
                    # The ticket's one-time id: a second submit of this ticket (a double
                    # click, a retry on a slow network) finds its order and lands where the
                    # first one did.
                    client_order_id=data.get("client_order_id") or "",
                )
            except DomainError as exc:
                _add_ticket_error(form, exc)
            else:
                opened = order.position_id and order.status == Order.Status.FILLED
                repeated = getattr(order, "repeated", False)
                outcome = _outcome_since(order) if repeated else None
                if repeated and not _same_ticket(order, data, quantity):
                    # The ticket was changed while its first submit was on its way: that one
                    # stands, and this one would need a ticket of its own.
                    messages.error(
                        request,
                        "This ticket was already sent with other values, and that first order "
                        "was carried out; nothing more was done. Check it before trying again.",
                    )
                elif outcome is not None:
                    # Sent again from a page kept by the browser, after the first order's
                    # position closed or the order left the book: not a new trade.
                    messages.info(
                        request,
                        f"This ticket was already sent, and {outcome}; nothing more was done. "
                        "Send a new ticket to trade again.",
                    )
                elif opened:
                    messages.success(request, f"Opened position #{order.position_id}.")
                else:
                    messages.success(request, f"Order #{order.pk} is resting until it triggers.")
                if opened:
                    return redirect("position", position_id=order.position_id)
                return redirect("dashboard", account_id=account.pk)
    # Each instrument's cap for the slider: classroom, instrument and first-tier limits.
    caps = {
        str(i.pk): min(
            [account.classroom.max_leverage, i.max_leverage]
            + [t.max_leverage for t in i.margin_tiers()[:1]]
        )
        for i in form.fields["instrument"].queryset  # type: ignore[attr-defined]
    }
    return render(
        request,
        "web/trade.html",
        {
            "account": account,
            "classroom": account.classroom,
            "form": form,
            "leverage_caps": json.dumps(caps),
            "tradable": bool(caps),
        },
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def trade_preview(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    form = _trade_form(request, account)
    quote = None
    prices = None
    valid = form.is_valid()
    # Sized before the quote: a refusal it adds takes its field (the extra collateral, say)
    # out of the cleaned data, and the size would then be worked out without it.
    sizing = _sizing(account, form)
    if valid:
        quantity = _quantity(form)
        if quantity is not None:
            data = form.cleaned_data
            try:
                _check_price_grid(data)
                prices = services.clean_order_prices(
                    instrument=data["instrument"],
                    side=data["side"],
                    type=data["type"],
                    price=data.get("price"),
                    stop_price=data.get("stop_price"),
                )
                quote = services.quote_open(
                    account=account,
                    instrument=data["instrument"],
                    side=data["side"],
                    quantity=quantity,
                    leverage=data["leverage"],
                    extra_collateral=data.get("extra_collateral") or ZERO,
                    entry_price=prices.entry_price,
                    take_profit=data.get("take_profit"),
                    stop_loss=data.get("stop_loss"),
                )
            except DomainError as exc:
                _add_ticket_error(form, exc)
    elif not any(request.POST.get(name, "").strip() for name in ("quantity", "notional")):
        # The preview also runs as the ticket loads: a size not typed yet is not a mistake.
        form.errors.pop("quantity", None)
    instrument = form.cleaned_data.get("instrument") if hasattr(form, "cleaned_data") else None
    return render(
        request,
        "_partials/preview.html",
        {
            "form": form,
            "quote": quote,
            # A limit or stop order that rests holds the quote's total while it waits.
            "rests": prices is not None and not prices.fills_now,
            "instrument": instrument,
            "currency": account.classroom.currency,
            "sizing": sizing,
            # What the preview's prices are rounded for: its side, on its instrument's tick.
            "order": SimpleNamespace(
                side=getattr(form, "cleaned_data", {}).get("side"), instrument=instrument
            ),
            "field_errors": any(name != "__all__" for name in form.errors),
        },
    )


def _entry_estimate(data: dict[str, Any], instrument: Instrument) -> Decimal | None:
    """Where the ticket's order would open: its limit or stop price if it rests, else the
    market's fill price (a limit the market has reached fills at once, at market)."""
    if instrument.mark_price is None:
        return None
    try:
        prices = services.clean_order_prices(
            instrument=instrument,
            side=data.get("side") or "long",
            type=data.get("type") or Order.Type.MARKET,
            price=data.get("price"),
            stop_price=data.get("stop_price"),
        )
    except DomainError:
        prices = None
    if prices is not None and prices.entry_price is not None:
        return prices.entry_price
    buying = data.get("side") != "short"
    return services.fill_price(instrument=instrument, buying=buying, mark=instrument.mark_price)


def _sizing(account: TradingAccount, form: TradeForm) -> dict[str, Any] | None:
    """What the ticket can open: the free balance, the mark and the largest quantity at the
    chosen leverage and entry, after the extra collateral asked for."""
    data = getattr(form, "cleaned_data", {})
    instrument: Instrument | None = data.get("instrument")
    leverage = data.get("leverage")
    entry = None if instrument is None else _entry_estimate(data, instrument)
    if instrument is None or not leverage or entry is None:
        return None
    extra = data.get("extra_collateral") or ZERO
    spendable = TradingAccount(
        pk=account.pk, classroom=account.classroom, balance=max(account.balance - extra, ZERO)
    )
    quantity = services.max_open_quantity(
        account=spendable, instrument=instrument, leverage=leverage, entry_price=entry
    )
    return {
        "balance": account.balance,
        "mark": instrument.mark_price,
        "leverage": leverage,
        "max_quantity": quantity,
        # As a number input reads it: no thousands separator.
        "max_quantity_plain": plain(quantity),
    }


# --- position page ------------------------------------------------------------------


def _position_context(request: HttpRequest, position: Position) -> dict[str, Any]:
    liquidation = LiquidationEvent.objects.filter(position_id=position.pk).first()
    calls = list(MarginCall.objects.filter(position_id=position.pk).order_by("created_at"))
    movements = selectors.collateral_movements(position)
    valuation = position_valuation(position)
    if liquidation is not None:
        collateral = liquidation.collateral_lost
    elif position.is_open:
        collateral = valuation.collateral
    else:
        collateral = selectors.peak_collateral(movements)
    # The lesson compares isolated with cross margin on this position's price path: for a
    # liquidation, or an open position that has lost enough to make the point. A position
    # closed by hand has its money back in the free balance, where the comparison no
    # longer holds.
    lesson = None
    losing = (
        valuation.unrealized_pnl is not None
        and valuation.unrealized_pnl <= -valuation.collateral * LESSON_LOSS_SHARE
    )
    if liquidation is not None or (position.is_open and losing):
        lesson = selectors.lesson_for(position, liquidation=liquidation, collateral=collateral)
    account = position.account
    return {
        "position": position,
        "instrument": position.instrument,
        "account": account,
        "classroom": account.classroom,
        "currency": account.classroom.currency,
        "valuation": valuation,
        "liquidation": liquidation,
        "collateral": collateral,
        "timeline": selectors.position_timeline(
            position, movements, calls, liquidation, selectors.tpsl_changes(position)
        ),
        "closed_at_tpsl": (
            selectors.tpsl_close(position) if position.status == Position.Status.CLOSED else None
        ),
        "lesson": lesson,
        # The fills that closed it (closes, a liquidation, auto-deleveraging), from which its
        # average exit price is worked out.
        "exit_parts": len(position.exit_fills),  # type: ignore[attr-defined]
        "net_result": None if position.is_open else selectors.net_result(position),
        # Of the margin balance left at a liquidation, what the student did not get back.
        "to_insurance": (
            None if liquidation is None else liquidation.leftover - liquidation.returned_to_trader
        ),
        "orders": list(Order.objects.filter(position_id=position.pk, status=Order.Status.RESTING)),
    }


def _position(request: HttpRequest, position_id: int) -> Position:
    position = selectors.position_for_user(request.user, position_id)  # type: ignore[arg-type]
    position.account = TradingAccount.objects.select_related("classroom").get(
        pk=position.account_id
    )
    return position


def _on_tick(value: Decimal | None, instrument: Instrument) -> Decimal | None:
    """A stored price (kept to 10 places) written to the tick's places for an input: 62088.4."""
    if value is None:
        return None
    return value.quantize(Decimal(1).scaleb(-price_places(instrument)))


def _action_forms(position: Position, bound: Any = None) -> dict[str, Any]:
    """The position page's three action forms, with the submitted one kept bound."""
    forms = {
        "margin_form": MarginForm(prefix="margin"),
        "close_form": CloseForm(prefix="close"),
        "tpsl_form": TpSlForm(
            prefix="tpsl",
            initial={
                "take_profit": _on_tick(position.take_profit, position.instrument),
                "stop_loss": _on_tick(position.stop_loss, position.instrument),
            },
        ),
    }
    for name, form in forms.items():
        if bound is not None and type(form) is type(bound):
            forms[name] = bound
    return forms


@login_required
@require_GET
def position_detail(request: HttpRequest, position_id: int) -> HttpResponse:
    position = _position(request, position_id)
    remember_account(request, position.account)
    context = _position_context(request, position)
    context.update(_action_forms(position))
    return render(request, "web/position.html", context)


@login_required
@require_GET
def position_live(request: HttpRequest, position_id: int) -> HttpResponse:
    position = _position(request, position_id)
    return render(request, "_partials/position_live.html", _position_context(request, position))


def _position_action(request: HttpRequest, position_id: int, form: Any, act: Any) -> HttpResponse:
    """Validate ``form``, then ``act(position, data)``, which changes the position through a
    service and returns the message that tells the student what changed."""
    position = _position(request, position_id)
    if form.is_valid():
        try:
            done = act(position, form.cleaned_data)
        except (ClientOrderIdReused, ClientRequestIdReused):
            # The form was sent before with other terms (changed while the first submit was
            # on its way): that one is done, and this one would need a form of its own.
            messages.error(
                request,
                "This form was already sent with other values, and that first submit was "
                "carried out; nothing more was done. Check the position before trying again.",
            )
            return redirect("position", position_id=position.pk)
        except DomainError as exc:
            if position.is_open:
                add_domain_error(form, exc)
            else:
                messages.error(request, exc.message)  # its forms are no longer shown
        else:
            messages.success(request, done)
            return redirect("position", position_id=position.pk)
    context = _position_context(request, position)
    context.update(_action_forms(position, bound=form))
    return render(request, "web/position.html", context, status=400)


@login_required
@require_POST
def position_margin(request: HttpRequest, position_id: int) -> HttpResponse:
    def act(position: Position, data: dict[str, Any]) -> str:
        adding = data["action"] == "add"
        change = services.position_add_margin if adding else services.position_remove_margin
        changed = change(
            position_id=position.pk,
            amount=data["amount"],
            # The form's one-time id: a second submit of it (a double click) finds the first
            # change and moves nothing more.
            client_request_id=data.get("client_request_id") or "",
        )
        currency = position.account.classroom.currency
        # The amount as it moved, every place of it: 0.001 is not "0.00".
        amount = exact_money_text(data["amount"], currency)
        lp = changed.liquidation_price
        moved = (
            f"liquidation price now {shown.risk_price(lp, changed)}"
            if lp is not None
            else "it can no longer be liquidated"
        )
        now = f"now {shown.money(changed.collateral.amount, currency)} {currency}"
        if changed.repeated:  # type: ignore[attr-defined]
            done = "added to" if adding else "removed from"
            state = f" ({now}; {moved})" if changed.is_open else ""
            return (
                f"This form was already sent: {amount} was {done} the collateral of position "
                f"#{position.pk} once, and nothing more was moved{state}."
            )
        verb = f"Added {amount} to" if adding else f"Removed {amount} from"
        return f"{verb} the collateral of position #{position.pk} ({now}); {moved}."

    return _position_action(request, position_id, MarginForm(request.POST, prefix="margin"), act)


@login_required
@require_POST
def position_close(request: HttpRequest, position_id: int) -> HttpResponse:
    def act(position: Position, data: dict[str, Any]) -> str:
        closed = services.position_close(
            position_id=position.pk,
            quantity=data.get("quantity"),
            # The form's one-time id: a second submit of it (a double click) finds the
            # first close and says what that one did, closing nothing more.
            client_order_id=data.get("client_order_id") or "",
        )
        # What this close did, from its fill: the same words for the second submit.
        fill = Fill.objects.get(order_id=closed.close_order.pk)  # type: ignore[attr-defined]
        instrument, currency = closed.instrument, position.account.classroom.currency
        result = shown.pnl(fill.realized_pnl, currency)
        # A second submit may come after later closes or a liquidation: what this close left
        # open is what is open now plus what every later fill took.
        later = (
            Fill.objects.filter(position_id=position.pk, pk__gt=fill.pk)
            .exclude(kind=Fill.Kind.OPEN)
            .aggregate(total=Sum("quantity"))["total"]
        )
        left = closed.quantity + (later or ZERO)
        if left:
            # A partial close closes exactly what was asked, or nothing.
            still = "stays" if later is None else "was left"
            return (
                f"Closed {shown.qty(fill.quantity, instrument)} of "
                f"{shown.qty(fill.quantity + left, instrument)} {instrument.symbol} "
                f"(realised PnL {result}); {shown.qty(left, instrument)} "
                f"{still} open in position #{position.pk}."
            )
        if closed.realized_pnl == fill.realized_pnl:
            return (
                f"Position #{position.pk} closed at {shown.price(fill.price, instrument)} "
                f"(realised PnL {result})."
            )
        # Earlier partial closes realised part of it: say this close's share and the total,
        # the figure the position page shows.
        total = shown.pnl(closed.realized_pnl, currency)
        return (
            f"Position #{position.pk} closed at {shown.price(fill.price, instrument)} "
            f"(realised PnL {result} on this close, {total} in all)."
        )

    return _position_action(request, position_id, CloseForm(request.POST, prefix="close"), act)


@login_required
@require_POST
def position_tpsl(request: HttpRequest, position_id: int) -> HttpResponse:
    def act(position: Position, data: dict[str, Any]) -> str:
        changed = services.position_set_tpsl(
            position_id=position.pk,
            take_profit=data.get("take_profit"),
            stop_loss=data.get("stop_loss"),
        )
        # Say what is set now: an emptied field clears its level, which the student may
        # not have meant.
        levels = [
            f"{name} at {shown.price(level, changed.instrument)}" if level else f"no {name}"
            for name, level in (
                ("take-profit", changed.take_profit),
                ("stop-loss", changed.stop_loss),
            )
        ]
        return f"Saved for position #{position.pk}: {levels[0]}, {levels[1]}."

    return _position_action(request, position_id, TpSlForm(request.POST, prefix="tpsl"), act)


# One margin-call label per this share of a chart's time span: see ``position_chart``.
MARKER_LABEL_SHARE = 4


def _chart_time(value: Any) -> int:
    return int(value.timestamp())


@login_required
@require_GET
def position_chart(request: HttpRequest, position_id: int) -> JsonResponse:
    """The mark history of a position's life and the lines and markers drawn over it."""
    position = _position(request, position_id)
    liquidation = LiquidationEvent.objects.filter(position_id=position.pk).first()
    start, end = selectors.position_window(position)
    if liquidation is not None:
        # Keep drawing the path after the liquidation: the lesson is how far it went.
        end = max(end, timezone.now())
    ticks = selectors.price_ticks(position.instrument_id, start, end)
    # The path starts at the entry and, while open, ends at the current mark, even between ticks.
    path = [(position.opened_at, position.entry_price), *ticks]
    if position.is_open and position.instrument.mark_price is not None:
        path.append((timezone.now(), position.instrument.mark_price))
    # A close in part realises its PnL and leaves less open: at each point the PnL is what
    # was realised so far plus what was still open, marked at that point's price, and the
    # floor is what was realised so far minus the collateral held then (see ``Holding``).
    holdings = selectors.position_holdings(position, selectors.collateral_movements(position))
    sign = 1 if position.side == "long" else -1
    digits = currency_places(position.account.classroom.currency)

    def cash(value: Decimal) -> str:
        """An amount rounded as the page rounds it, so the chart's labels agree with it."""
        return str(shown_rounded(value, digits))

    # The PnL also has a point at each margin change and close between two marks, priced at
    # the mark of the moment (the last one published), so the floor steps where it happened.
    path_times = [at for at, _ in path]
    on_path = set(path_times)
    between = [
        (at, path[bisect_right(path_times, at) - 1][1])
        for at in holdings.times(path_times[0], max(path_times[-1], end))
        if at not in on_path
    ]
    mark: dict[int, str] = {}
    pnl: dict[int, str] = {}
    floor: dict[int, Decimal] = {}
    unfenced: dict[int, str] = {}
    previous: tuple[int, str] | None = None
    for at, price in sorted([*path, *between], key=lambda point: point[0]):
        second = _chart_time(at)
        if at in on_path:
            mark[second] = str(price)
        held = holdings.at(at)
        raw = sign * held.quantity * (price - position.entry_price)
        liquidated = liquidation is not None and at >= liquidation.created_at
        # The ring-fence: the trader's loss stops at the floor (a gap past the bankruptcy
        # price is the insurance fund's), while the same path without it goes on. Once
        # liquidated, what the liquidation took is lost whatever the mark does next.
        if liquidation is not None and liquidated:
            floor[second] = held.realised - liquidation.collateral_lost
            pnl[second] = cash(floor[second])
        else:
            floor[second] = held.floor
            pnl[second] = cash(held.fenced(raw))
        if held.realised + raw < held.floor or liquidated:
            if not unfenced and previous is not None:
                unfenced[previous[0]] = previous[1]  # start the line where the paths part
            unfenced[second] = cash(held.realised + raw)
        previous = (second, cash(held.realised + raw))
    if liquidation is not None:
        second = _chart_time(liquidation.created_at)
        floor[second] = holdings.at(liquidation.created_at).realised - liquidation.collateral_lost
        pnl[second] = cash(floor[second])
    if position.status == Position.Status.CLOSED and position.closed_at is not None:
        # The path ends where the position did: at its realised PnL, nothing left to lose.
        second = _chart_time(position.closed_at)
        floor[second] = position.realized_pnl
        pnl[second] = cash(position.realized_pnl)
    # The floor as steps: a point where it moves, and the last one to carry it to the end.
    steps: list[tuple[int, str]] = []
    last = max(floor)
    for second, value in sorted(floor.items()):
        if not steps or cash(value) != steps[-1][1] or second == last:
            steps.append((second, cash(value)))
    # While the mark hovers about the warning level, every crossing is a margin call, seconds
    # apart: their labels would print over one another into an unreadable smudge. Each call
    # keeps its dot; one label names a run of them (the calls within a quarter of the chart's
    # time span of the run's first, about the room a label takes at the chart's width).
    runs: list[list[datetime]] = []
    label_room = (end - start) / MARKER_LABEL_SHARE
    for called_at in (
        MarginCall.objects.filter(position_id=position.pk)
        .order_by("created_at", "pk")
        .values_list("created_at", flat=True)
    ):
        if runs and called_at - runs[-1][0] < label_room:
            runs[-1].append(called_at)
        else:
            runs.append([called_at])
    markers: list[dict[str, object]] = []
    for run in runs:
        label = "Margin call" if len(run) == 1 else f"{len(run)} margin calls"
        markers.append({"time": _chart_time(run[0]), "kind": "margin_call", "text": label})
        markers.extend(
            {"time": _chart_time(at), "kind": "margin_call", "text": ""} for at in run[1:]
        )
    if liquidation is not None:
        markers.append(
            {
                "time": _chart_time(liquidation.created_at),
                "kind": "liquidation",
                "text": "Liquidated",
            }
        )
    # The lines are labelled with the prices the page shows: on the tick, towards the entry.
    tick = position.instrument.tick_size
    lp = towards_entry(
        liquidation.liquidation_price if liquidation else position.liquidation_price,
        side=position.side,
        tick=tick,
    )
    bp = towards_entry(
        liquidation.bankruptcy_price if liquidation else position.bankruptcy_price,
        side=position.side,
        tick=tick,
    )
    return JsonResponse(
        {
            "status": position.status,
            "mark": [{"time": t, "value": v} for t, v in sorted(mark.items())],
            "pnl": [{"time": t, "value": v} for t, v in sorted(pnl.items())],
            "pnl_unfenced": [{"time": t, "value": v} for t, v in sorted(unfenced.items())],
            "lines": {
                "entry": str(position.entry_price),
                "liquidation": None if lp is None else str(lp),
                "bankruptcy": str(bp),
            },
            "floor": [{"time": t, "value": v} for t, v in steps],
            "markers": markers,
            "price_places": price_places(position.instrument),
            "money_places": digits,
        }
    )


# --- orders, history, leaderboard ---------------------------------------------------


@login_required
@require_POST
def order_cancel(request: HttpRequest, order_id: int) -> HttpResponse:
    order = selectors.order_for_user(request.user, order_id)  # type: ignore[arg-type]
    try:
        services.order_cancel(order_id=order.pk)
    except OrderNotCancellable:
        # A second click, or a page left open while the order filled: say which order, and
        # what became of it.
        order.refresh_from_db(fields=["status"])
        replaced = Order.objects.filter(replaces_id=order.pk).exists()
        if order.status == Order.Status.CANCELLED and not replaced:
            # What was asked for, by this click or an earlier one.
            messages.info(request, f"Order #{order.pk} is cancelled.")
        else:
            messages.error(
                request,
                f"Order #{order.pk} {services.order_state(order)}; only resting orders can be "
                "cancelled.",
            )
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Order #{order.pk} cancelled.")
    return redirect(_next_or_dashboard(request, order, request.POST.get("next", "")))


def _next_or_dashboard(request: HttpRequest, order: Order, target: str) -> str:
    """``target`` if it is a path of this site, else the order's account's dashboard
    (anything but a path would be read by ``redirect`` as the name of a URL)."""
    if target.startswith("/") and url_has_allowed_host_and_scheme(
        target, {request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("dashboard", kwargs={"account_id": order.account_id})


def _no_longer_resting(request: HttpRequest, order: Order, target: str) -> HttpResponse:
    """Back where the student came from, saying what became of an order they meant to change."""
    order.refresh_from_db(fields=["status"])  # it may have ended during this request
    messages.error(
        request,
        f"Order #{order.pk} {services.order_state(order)}; only resting orders can be changed.",
    )
    return redirect(target)


@login_required
@require_http_methods(["GET", "POST"])
def order_change(request: HttpRequest, order_id: int) -> HttpResponse:
    """Give a resting order a new quantity or price: the service replaces it with a new
    order in one step, and a refused change leaves it resting as it was."""
    order = selectors.order_for_user(request.user, order_id)  # type: ignore[arg-type]
    target = _next_or_dashboard(
        request, order, request.POST.get("next", request.GET.get("next", ""))
    )
    form = OrderChangeForm(request.POST if request.method == "POST" else None, order=order)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        changes = {
            name: data[name]
            for name in ("quantity", "price", "stop_price")
            if name in data and data[name] != getattr(order, name)
        }
        if not changes and order.status == Order.Status.RESTING:
            form.add_error(None, "This is the order as it stands: change its quantity or price.")
        elif not changes:
            return _no_longer_resting(request, order, target)
        else:
            try:
                new = services.order_replace(
                    order_id=order.pk,
                    # The form's one-time id: a second submit finds the first replacement.
                    client_order_id=data.get("client_order_id") or "",
                    **changes,
                )
            except ClientOrderIdReused:
                # The form was sent before with other values: that change is done, and this
                # one would need a form of its own.
                messages.error(
                    request,
                    "This form was already sent with other values, and that first submit was "
                    "carried out; nothing more was done. Check the order before trying again.",
                )
                return redirect(target)
            except OrderNotCancellable:
                # Filled or cancelled while the page stood open.
                return _no_longer_resting(request, order, target)
            except DomainError as exc:
                add_domain_error(form, exc)
            else:
                instrument = new.instrument
                at = new.price if new.type == Order.Type.LIMIT else new.stop_price
                filled = " It filled at once: the market had reached it." if new.filled_at else ""
                messages.success(
                    request,
                    f"Order #{order.pk} replaced by order #{new.pk}: "
                    f"{new.get_type_display().lower()} {new.get_side_display().lower()} "
                    f"{shown.qty(new.quantity, instrument)} {instrument.symbol} at "
                    f"{shown.price(at, instrument)}.{filled}",
                )
                return redirect(target)
    elif order.status != Order.Status.RESTING and request.method == "GET":
        return _no_longer_resting(request, order, target)
    return render(
        request,
        "web/order_change.html",
        {"order": order, "form": form, "next": target, "account": order.account},
        status=400 if form.errors else 200,
    )


# How many closed positions and orders the history page lists, the newest first.
HISTORY_POSITIONS = 200
HISTORY_ORDERS = 100


@login_required
@require_GET
def history(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    remember_account(request, account)
    # Each line shows the change of the balance as shown (in cents), so the column adds up on
    # the page even where the exact amounts carry fractions of a cent (the CSV keeps them).
    digits = currency_places(account.classroom.currency)
    running = ZERO
    statement = []
    for entry in selectors.ledger_statement(account):
        before = shown_rounded(running, digits)
        running += entry.amount
        statement.append((entry, shown_rounded(running, digits) - before, running))
    statement.reverse()
    # One more than shown, to tell a student with a long history that older rows exist.
    positions = selectors.closed_positions(account, limit=HISTORY_POSITIONS + 1)
    orders = selectors.recent_orders(account, limit=HISTORY_ORDERS + 1)
    return render(
        request,
        "web/history.html",
        {
            "account": account,
            "classroom": account.classroom,
            "currency": account.classroom.currency,
            "positions": positions[:HISTORY_POSITIONS],
            "older_positions": len(positions) > HISTORY_POSITIONS,
            "orders": orders[:HISTORY_ORDERS],
            "older_orders": len(orders) > HISTORY_ORDERS,
            "history_positions": HISTORY_POSITIONS,
            "history_orders": HISTORY_ORDERS,
            "statement": statement,
        },
    )


@login_required
@require_GET
def statement_csv(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="statement-{account.pk}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["date", "transaction", "kind", "memo", "position", "amount", "balance", "currency"]
    )
    running = ZERO
    for entry in selectors.ledger_statement(account):
        running += entry.amount
        tx = entry.transaction
        writer.writerow(
            [
                cell(v)
                for v in (
                    tx.created_at.isoformat(),
                    tx.pk,
                    tx.kind,
                    tx.memo,  # an instructor's reason for a grant, word for word
                    tx.position_id,
                    entry.amount,
                    running,
                    account.classroom.currency,
                )
            ]
        )
    return response


@login_required
@require_GET
def positions_csv(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="positions-{account.pk}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        ["position", "instrument", "side", "leverage", "quantity", "entry_price", "exit_price",
         "average_exit_price", "status", "realized_pnl", "fees_paid", "net_result", "opened_at",
         "closed_at", "currency"]
    )  # fmt: skip
    # The net result as the history shows it: after a liquidation, the part of the collateral
    # sent to the insurance fund is in neither the realised PnL nor the fees.
    for p in selectors.closed_positions(account, limit=10_000):
        writer.writerow(
            [cell(v) for v in (
                p.pk, p.instrument.symbol, p.side, p.leverage, p.opened_quantity, p.entry_price,
                # exit_price: the last fill's; average_exit_price: every closing fill's,
                # weighted by quantity, exact to 10 places (the one the PnL comes from).
                p.exit_price, p.average_exit_price, p.status, p.realized_pnl, p.fees_paid,
                p.net_result, p.opened_at.isoformat(),  # type: ignore[attr-defined]
                p.closed_at.isoformat() if p.closed_at else None, account.classroom.currency,
            )]
        )  # fmt: skip
    return response


@login_required
@require_GET
def leaderboard(request: HttpRequest, account_id: int) -> HttpResponse:
    account = selectors.account_for_user(request.user, account_id)  # type: ignore[arg-type]
    remember_account(request, account)
    return render(
        request,
        "web/leaderboard.html",
        {
            "account": account,
            "classroom": account.classroom,
            "currency": account.classroom.currency,
            "rows": performance.leaderboard(account.classroom),
        },
    )
