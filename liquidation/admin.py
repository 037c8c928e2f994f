"""The instructor's tools in the admin: classrooms, accounts, the market, the engine's records.

Classrooms and trading accounts are registered here rather than in ``accounts.admin``
because their actions (reset, grades, the live monitor) reach into the positions and the
engine, and dependencies point from this app down to the others. Every action goes
through a service, asks for confirmation first and writes to the admin log.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts import errors
from accounts.admin_numbers import written
from accounts.admin_scoping import (
    PLAIN_NUMBERS,
    ClassroomScopedAdmin,
    EditedFieldsForm,
    ReadOnlyInline,
    ScopedInline,
)
from accounts.form_fields import WrittenDecimalField
from accounts.models import Classroom, ClassroomPocket, Membership, TradingAccount
from accounts.money import ZERO, money_text, price_text, shown
from accounts.services import (
    accounts_adjust,
    classroom_create,
    classroom_set_instructor,
    clean_amount,
    instructor_refusal,
)
from liquidation import admin_views
from liquidation.instructor import (
    account_reset,
    account_set_frozen,
    classroom_copy_instruments,
    classroom_grades,
    classroom_regenerate_join_code,
    classroom_set_trading,
    confirmation_claim,
    confirmation_expired,
    confirmation_record_classroom,
    confirmation_token,
    confirmed_classroom_id,
    grades_csv,
    insurance_fund_adjust,
)
from liquidation.models import (
    AdlFill,
    EngineHeartbeat,
    LiquidationEvent,
    MarginCall,
    PriceFeed,
    PriceTick,
    ReplayPoint,
    Scenario,
)
from liquidation.services import replay_upload, scenario_start, scenario_stop
from positions.admin import InstrumentAdmin as BaseInstrumentAdmin
from positions.admin import MarginTierInline
from positions.models import Instrument, Order, Position
from positions.selectors import account_equities, order_margins
from positions.services import lock_accounts_with_open_positions

related_only = admin.RelatedOnlyFieldListFilter


# --- confirmation pages ---------------------------------------------------------------


def one_time_token() -> str:
    """The token of one confirmation page or "add classroom" form, claimed when it acts."""
    return confirmation_token()


class AlreadyConfirmed(Exception):
    """The confirmation page sent has acted already, or is too old to tell (``expired``)."""

    def __init__(self, *, expired: bool = False) -> None:
        super().__init__()
        self.expired = expired


ALREADY_CONFIRMED = (
    "This confirmation was sent twice: it acted the first time only, and nothing more was changed."
)
CONFIRMATION_EXPIRED = (
    "This confirmation page has expired: it was opened too long ago to tell whether it acted "
    "already, so nothing was changed. Choose the action again."
)
TOKEN_RULE = re.compile(r"\A[0-9a-f]{32}\Z")
CLASSROOM_SENT_TWICE = (
    "This form was sent twice: the classroom was created the first time only, and no other "
    "was created."
)
CLASSROOM_FORM_EXPIRED = (
    "This form has expired: it was opened too long ago to tell whether it created a classroom "
    "already, so none was created. Check the list below, then add the classroom again."
)


def claim_token(token: str, *, actor_id: int | None) -> bool:
    """Claim a page's token in the open transaction; raise ``AlreadyConfirmed`` if it acted
    already or is too old to tell. False for a request without a token (not sent from the
    page): it cannot be told from another and acts."""
    if not TOKEN_RULE.match(token):
        return False
    if confirmation_expired(token=token):
        raise AlreadyConfirmed(expired=True)
    if not confirmation_claim(token=token, actor_id=actor_id):
        raise AlreadyConfirmed
    return True


class InstructorActionsMixin(ClassroomScopedAdmin):
    """Actions that ask first, on an intermediate page listing what they will touch.

    Each confirmation page carries a token of its own, claimed in the transaction that acts
    on it: a double click on "Yes" or a resent request acts once, not twice.
    """

    def confirmation(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        *,
        action: str,
        title: str,
        question: str,
        consequence: str = "",
        form: forms.Form | None = None,
        confirm_label: str = "Yes, do it",
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "question": question,
            "consequence": consequence,
            "queryset": queryset,
            "form": form,
            "action": action,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "confirm_label": confirm_label,
            "confirmation_token": one_time_token(),
            "media": self.media + (form.media if form else forms.Media()),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/ringfence/confirm_action.html", context)

    @staticmethod
    def confirmed(request: HttpRequest) -> bool:
        return request.POST.get("confirm") == "yes"

    @staticmethod
    def claim_confirmation(request: HttpRequest) -> None:
        """Claim the confirmation page's token in the open transaction (see ``claim_token``)."""
        claim_token(request.POST.get("confirmation_token", ""), actor_id=request.user.pk)

    def already_confirmed(self, request: HttpRequest, exc: AlreadyConfirmed) -> None:
        message = CONFIRMATION_EXPIRED if exc.expired else ALREADY_CONFIRMED
        self.message_user(request, message, messages.WARNING)

    def confirm_then_each(
        self,
        request: HttpRequest,
        queryset: QuerySet[Any],
        *,
        apply: Callable[[Any], str | None],
        done: str,
        nothing: str | None = None,
        lock_first: Callable[[list[int]], object] | None = None,
        **page: Any,
    ) -> TemplateResponse | None:
        """Ask first; then run ``apply`` (a service call returning the log message) on every
        selected row in one transaction, so a refusal of one leaves all of them unchanged.

        ``lock_first`` takes the rows' locks before the first ``apply``, for services whose
        postings would otherwise hold a pocket while waiting for the next row. ``apply``
        returns ``None`` for a row it had nothing to do for: no log entry, and ``done``
        counts only the rows that changed; when none did, ``nothing`` says why instead of
        "... 0 row(s)"."""
        if not self.confirmed(request):
            return self.confirmation(request, queryset, **page)
        try:
            with transaction.atomic():
                self.claim_confirmation(request)
                if lock_first is not None:
                    lock_first([obj.pk for obj in queryset])
                changed = 0
                for obj in queryset:
                    message = apply(obj)
                    if message is not None:
                        self.log_change(request, obj, message)
                        changed += 1
        except AlreadyConfirmed as exc:
            self.already_confirmed(request, exc)
            return None
        except errors.DomainError as exc:
            self.message_user(request, f"Nothing was changed. {exc.message}", messages.ERROR)
            return None
        if changed == 0 and nothing is not None:
            self.message_user(request, nothing, messages.WARNING)
        else:
            self.message_user(request, done.format(count=changed))
        return None

    def grades_response(self, request: HttpRequest, rows: list[Any], filename: str) -> HttpResponse:
        response = HttpResponse(grades_csv(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response


# --- classrooms -----------------------------------------------------------------------


class ClassroomForm(forms.ModelForm):
    # A callable initial: each "add classroom" page gets a token of its own, which the
    # creation claims (as a confirmation page's), so the form sent twice creates one class.
    creation_token = forms.CharField(
        widget=forms.HiddenInput, required=False, initial=one_time_token
    )
    insurance_fund_seed = WrittenDecimalField(
        required=False,
        min_value=Decimal(0),
        decimal_places=8,
        max_digits=24,
        initial=Decimal(0),
        help_text="Paper money the house puts into the insurance fund when the class is created.",
    )

    class Meta:
        model = Classroom
        fields = (
            "name",
            "instructor",
            "starting_balance",
            "currency",
            "max_leverage",
            "trading_enabled",
            "trading_opens_at",
            "trading_closes_at",
            "liquidation_fee_rate",
            "leftover_policy",
            "ranking",
        )

    def _amount(self, name: str, *, allow_zero: bool) -> Decimal | None:
        # The services' own rule for amounts, so the form refuses what they would refuse.
        value = self.cleaned_data.get(name)
        if value is None:
            return None
        try:
            return clean_amount(value, field=name, allow_zero=allow_zero)
        except errors.DomainError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean_starting_balance(self) -> Decimal | None:
        return self._amount("starting_balance", allow_zero=False)

    def clean_insurance_fund_seed(self) -> Decimal | None:
        return self._amount("insurance_fund_seed", allow_zero=True)

    def clean_instructor(self) -> Any:
        instructor = self.cleaned_data.get("instructor")
        if instructor is not None and self.instance.pk is not None:
            refusal = instructor_refusal(classroom_id=self.instance.pk, instructor_id=instructor.pk)
            if refusal is not None:
                raise forms.ValidationError(refusal)
        return instructor


class CopyInstrumentsForm(forms.Form):
    source = forms.ModelChoiceField(
        queryset=Classroom.objects.none(), help_text="One of your other classrooms."
    )

    def __init__(self, *args: Any, sources: QuerySet[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["source"].queryset = sources  # type: ignore[attr-defined]

    def clean_source(self) -> Classroom:
        source: Classroom = self.cleaned_data["source"]
        if not Instrument.objects.filter(classroom=source).exists():
            raise forms.ValidationError(f"{source.name} has no instruments to copy.")
        return source


class SignedAmountForm(forms.Form):
    """An amount, a direction (the first choice adds, the second takes away) and a reason."""

    choices: tuple[tuple[str, str], tuple[str, str]]
    reason_help = "Written in the ledger."

    direction = forms.ChoiceField()
    amount = WrittenDecimalField(
        min_value=Decimal("0.00000001"),
        max_digits=24,
        decimal_places=8,
        error_messages={"min_value": "Enter an amount of at least 0.00000001."},
    )
    reason = forms.CharField(max_length=200)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["direction"].choices = self.choices  # type: ignore[attr-defined]
        self.fields["reason"].help_text = self.reason_help

    def signed_amount(self) -> Decimal:
        amount: Decimal = self.cleaned_data["amount"]
        return amount if self.cleaned_data["direction"] == self.choices[0][0] else -amount


class InsuranceFundForm(SignedAmountForm):
    choices = (("top_up", "Top up (from the house)"), ("draw_down", "Draw down (to the house)"))


def _currency(membership: Membership) -> str:
    return membership.classroom.currency


class RosterInline(ScopedInline):
    """The classroom's members: role, free balance and equity at the current marks."""

    model = Membership
    fields = ("user", "role", "joined_at", "balance", "equity", "trading_frozen")
    # The role is read-only: it follows from how someone came in (the instructor creates the
    # class, students join with its code), and an edited role would grant nothing but drop
    # the student from the grades.
    readonly_fields = ("user", "role", "joined_at", "balance", "equity", "trading_frozen")
    can_delete = False
    verbose_name_plural = "roster"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # students join with the join code, which funds their account

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return (
            super()
            .get_queryset(request)
            .select_related("user", "classroom")
            .order_by("role", "user__username")
        )

    def _account(self, membership: Membership) -> TradingAccount | None:
        # Inline instances live for one request and show one classroom: read its accounts,
        # valued at the marks, once for the whole roster.
        cache: dict[int, TradingAccount] | None = self.__dict__.get("_accounts")
        if cache is None:
            accounts = list(TradingAccount.objects.filter(classroom_id=membership.classroom_id))
            self.__dict__["_equities"] = account_equities(accounts)
            cache = self.__dict__["_accounts"] = {a.user_id: a for a in accounts}
        return cache.get(membership.user_id)

    @admin.display(description="free balance")
    def balance(self, membership: Membership) -> Any:
        account = self._account(membership)
        return "-" if account is None else money_text(account.balance, _currency(membership))

    @admin.display(description="equity")
    def equity(self, membership: Membership) -> Any:
        account = self._account(membership)
        if account is None:
            return "-"
        return money_text(self.__dict__["_equities"][account.pk], _currency(membership))

    @admin.display(description="frozen", boolean=True)
    def trading_frozen(self, membership: Membership) -> bool | None:
        account = self._account(membership)
        return None if account is None else account.trading_frozen


class PocketInline(ReadOnlyInline):
    model = ClassroomPocket
    fields = ("kind", "amount")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).select_related("classroom")

    @admin.display(description="balance")
    def amount(self, pocket: ClassroomPocket) -> str:
        return money_text(pocket.balance, pocket.classroom.currency)


@admin.register(Classroom)
class ClassroomAdmin(InstructorActionsMixin):
    """A class: its rules, roster, money pockets, trading switch and live monitor."""

    classroom_path = ""
    form = ClassroomForm
    list_display = (
        "name",
        "instructor",
        "join_code",
        "trading_enabled",
        "trading_open_now",
        "starting_balance",
        "max_leverage",
        "monitor_link",
    )
    list_filter = ("trading_enabled", "leftover_policy")
    search_fields = ("name", "join_code")
    list_select_related = ("instructor",)
    readonly_fields = ("join_code", "created_at", "monitor_link")
    inlines = [RosterInline, PocketInline]
    actions = [
        "open_trading",
        "close_trading",
        "regenerate_join_code",
        "copy_instruments",
        "adjust_insurance_fund",
        "export_grades",
    ]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = [
            "name",
            "instructor",
            "join_code",
            "starting_balance",
            "currency",
            "max_leverage",
            "trading_enabled",
            "trading_opens_at",
            "trading_closes_at",
            "liquidation_fee_rate",
            "leftover_policy",
            "ranking",
            "created_at",
            "monitor_link",
        ]
        if obj is None:
            fields = [f for f in fields if f not in ("join_code", "created_at", "monitor_link")]
            fields += ["insurance_fund_seed", "creation_token"]
        if not request.user.is_superuser:
            fields.remove("instructor")  # an instructor creates classrooms for themselves
        return fields

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return self.inlines if obj is not None else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "instructor":
            kwargs["queryset"] = db_field.related_model.objects.filter(is_staff=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            if "instructor" in form.changed_data:
                # An operator handing the class over: the roster follows.
                classroom_set_instructor(classroom_id=obj.pk, instructor_id=obj.instructor_id)
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        owner = obj.instructor_id if request.user.is_superuser else request.user.pk
        assert owner is not None
        # Claimed before anything is created: a second sending waits here for the first's
        # transaction, then finds the token taken (see add_view). A form without a token (not
        # sent from the page) cannot be told from another and creates.
        token = data.get("creation_token") or ""
        claimed = claim_token(token, actor_id=request.user.pk)
        created = classroom_create(
            instructor_id=owner,
            name=data["name"],
            starting_balance=data["starting_balance"],
            currency=data["currency"],
            max_leverage=data["max_leverage"],
            liquidation_fee_rate=data["liquidation_fee_rate"],
            leftover_policy=data["leftover_policy"],
            insurance_fund_seed=data.get("insurance_fund_seed") or Decimal(0),
            trading_opens_at=data.get("trading_opens_at"),
            trading_closes_at=data.get("trading_closes_at"),
        )
        Classroom.objects.filter(pk=created.pk).update(
            trading_enabled=data["trading_enabled"], ranking=data["ranking"]
        )
        if claimed:
            confirmation_record_classroom(token=token, classroom_id=created.pk)
        created.refresh_from_db()
        for f in Classroom._meta.concrete_fields:
            setattr(obj, f.attname, getattr(created, f.attname))
        obj._state = created._state

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: Any = None) -> Any:
        response = super().response_add(request, obj, post_url_continue)
        if not Instrument.objects.filter(classroom=obj).exists():
            self.message_user(
                request,
                f"{obj.name} has no instruments yet, so its students cannot trade: add some "
                "under Instruments, or copy them with the action “Copy instruments from another "
                "classroom”.",
                messages.WARNING,
            )
        return response

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            with transaction.atomic():  # the classroom, its pockets and the log entry together
                return super().add_view(request, form_url, extra_context)
        except AlreadyConfirmed as exc:
            if exc.expired:
                self.message_user(request, CLASSROOM_FORM_EXPIRED, messages.WARNING)
                return redirect(f"{self.admin_site.name}:accounts_classroom_changelist")
        # The same form sent again (a double click on "Save", a resent request): go to the
        # classroom its first sending created.
        self.message_user(request, CLASSROOM_SENT_TWICE, messages.WARNING)
        created = confirmed_classroom_id(token=request.POST.get("creation_token", ""))
        if created is not None and self.get_queryset(request).filter(pk=created).exists():
            return redirect(f"{self.admin_site.name}:accounts_classroom_change", created)
        return redirect(f"{self.admin_site.name}:accounts_classroom_changelist")

    @admin.display(description="trading open now", boolean=True)
    def trading_open_now(self, obj: Classroom) -> bool:
        return obj.is_trading_open()

    @admin.display(description="live monitor")
    def monitor_link(self, obj: Classroom) -> str:
        if obj.pk is None:
            return "-"
        url = reverse(f"{self.admin_site.name}:accounts_classroom_monitor", args=[obj.pk])
        return format_html('<a href="{}">Open the live monitor</a>', url)

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "<int:classroom_id>/monitor/",
                self.admin_site.admin_view(self.monitor_view),
                name="accounts_classroom_monitor",
            ),
        ]
        return custom + super().get_urls()

    def monitor_view(self, request: HttpRequest, classroom_id: int) -> HttpResponse:
        self._require_in_scope(request, str(classroom_id))
        classroom = self.get_queryset(request).get(pk=classroom_id)
        if not self.has_view_permission(request, classroom):
            raise admin_views.PermissionDenied
        return admin_views.classroom_monitor(request, classroom=classroom, model_admin=self)

    # --- actions ------------------------------------------------------------------

    def _switch_trading(self, request: HttpRequest, queryset: QuerySet[Any], enabled: bool) -> Any:
        action = "open_trading" if enabled else "close_trading"
        verb = "Open" if enabled else "Close"

        def switch(classroom: Classroom) -> tuple[object, ...]:
            return (
                classroom.trading_enabled,
                classroom.trading_opens_at,
                classroom.trading_closes_at,
            )

        def apply(classroom: Classroom) -> str | None:
            switched = classroom_set_trading(classroom_id=classroom.pk, enabled=enabled)
            if switch(switched) == switch(classroom):
                return None  # open (or closed) already: nothing to log or count
            return f"{verb.rstrip('e')}ed trading now."

        return self.confirm_then_each(
            request,
            queryset,
            apply=apply,
            done=f"Trading {'opened' if enabled else 'closed'} in {{count}} classroom(s).",
            nothing=f"Nothing was changed: trading was {'open' if enabled else 'closed'} already "
            "in the selected classrooms.",
            action=action,
            title=f"{verb} trading now",
            question=f"{verb} trading now in these classrooms, whatever their window says?",
            consequence=(
                "A window that has not opened yet opens now; one that has closed no longer "
                "ends. Students can trade at once."
                if enabled
                else "Students cannot place orders or open positions until you open it again; "
                "open positions stay open and can still be liquidated."
            ),
            confirm_label=f"Yes, {verb.lower()} trading",
        )

    @admin.action(description="Open trading now", permissions=["change"])
    def open_trading(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        return self._switch_trading(request, queryset, True)

    @admin.action(description="Close trading now", permissions=["change"])
    def close_trading(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        return self._switch_trading(request, queryset, False)

    @admin.action(description="Regenerate the join code", permissions=["change"])
    def regenerate_join_code(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:

        def apply(classroom: Classroom) -> str:
            fresh = classroom_regenerate_join_code(classroom_id=classroom.pk)
            self.message_user(request, f"{fresh.name}: the new join code is {fresh.join_code}.")
            return "Regenerated the join code."

        return self.confirm_then_each(
            request,
            queryset,
            apply=apply,
            done="New join codes for {count} classroom(s).",
            action="regenerate_join_code",
            title="Regenerate the join code",
            question="Give these classrooms new join codes?",
            consequence="The old codes stop working at once; members stay members.",
        )

    @admin.action(description="Copy instruments from another classroom", permissions=["change"])
    def copy_instruments(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        form = CopyInstrumentsForm(
            request.POST if self.confirmed(request) else None,
            sources=self.get_queryset(request).exclude(pk__in=queryset.values("pk")),
        )
        page: dict[str, Any] = {
            "action": "copy_instruments",
            "title": "Copy instruments",
            "question": "Copy the instruments of another classroom into these?",
            "consequence": "Each instrument comes with its margin tiers, price feed and current "
            "mark; symbols a classroom has already are left as they are. The copies are "
            "independent: editing one never changes the other class.",
            "confirm_label": "Copy them",
        }
        if not form.is_valid():
            return self.confirmation(request, queryset, form=form, **page)
        source: Classroom = form.cleaned_data["source"]

        def apply(classroom: Classroom) -> str | None:
            copied = classroom_copy_instruments(source_id=source.pk, target_id=classroom.pk)
            if not copied:
                return None
            return f"Copied {', '.join(copied)} from {source.name}."

        return self.confirm_then_each(
            request,
            queryset,
            apply=apply,
            done=f"Copied instruments from {source.name} into {{count}} classroom(s).",
            nothing=(
                f"Nothing was copied: every symbol of {source.name} is in the selected "
                "classroom(s) already, and those are left as they are."
            ),
            form=form,
            **page,
        )

    @admin.action(description="Top up or draw down the insurance fund", permissions=["change"])
    def adjust_insurance_fund(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        form = InsuranceFundForm(request.POST if self.confirmed(request) else None)
        page: dict[str, Any] = {
            "action": "adjust_insurance_fund",
            "title": "Top up or draw down the insurance fund",
            "question": "Move paper money between the house and these classrooms' insurance funds?",
            "consequence": "The fund pays the shortfall when a liquidation gaps past the "
            "bankruptcy price; once it is empty, auto-deleveraging closes the most profitable "
            "opposite positions instead. It never goes below zero.",
            "confirm_label": "Move it",
        }
        if not form.is_valid():
            return self.confirmation(request, queryset, form=form, **page)
        amount = form.signed_amount()
        reason = form.cleaned_data["reason"]

        def apply(classroom: Classroom) -> str:
            insurance_fund_adjust(
                classroom_id=classroom.pk, amount=amount, reason=reason, actor_id=request.user.pk
            )
            verb = "Topped up" if amount > 0 else "Drew down"
            return f"{verb} the insurance fund by {written(abs(amount))}: {reason}"

        return self.confirm_then_each(
            request,
            queryset,
            apply=apply,
            done=(
                f"{'Topped up' if amount > 0 else 'Drew down'} the insurance fund of {{count}} "
                f"classroom(s) by {written(abs(amount))} each."
            ),
            form=form,
            **page,
        )

    @admin.action(description="Export grades (CSV)", permissions=["view"])
    def export_grades(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        if not self.confirmed(request):
            return self.confirmation(
                request,
                queryset,
                action="export_grades",
                title="Export grades",
                question="Download the grade book of these classrooms as CSV?",
                consequence="Equity and return are taken at the current mark prices.",
                confirm_label="Download",
            )
        rows = []
        for classroom in queryset:
            rows += [(classroom, g) for g in classroom_grades(classroom_id=classroom.pk)]
            self.log_change(request, classroom, "Exported the grades.")
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        return self.grades_response(request, rows, f"grades-{stamp}.csv")


# --- trading accounts -----------------------------------------------------------------


def reset_consequence(accounts: QuerySet[Any]) -> str:
    """What a reset of ``accounts`` will do, counted, before the instructor confirms it."""
    positions = Position.objects.filter(account__in=accounts, status=Position.Status.OPEN)
    orders = Order.objects.filter(account__in=accounts, status=Order.Status.RESTING)
    classrooms = Classroom.objects.filter(accounts__in=accounts).distinct().order_by("name")
    balances = "; ".join(
        f"{c.name}: {money_text(c.starting_balance, c.currency)} {c.currency}" for c in classrooms
    )
    return (
        f"{positions.count()} open position(s) are closed at the current mark and "
        f"{orders.count()} resting order(s) cancelled; then the house tops up or takes back "
        f"the difference to the starting balance ({balances}). A reset cannot be undone."
    )


class AdjustForm(SignedAmountForm):
    choices = (("grant", "Grant (add paper money)"), ("deduct", "Deduct (take paper money)"))
    reason_help = "Shown in the student's ledger statement."


@admin.register(TradingAccount)
class TradingAccountAdmin(InstructorActionsMixin):
    """A student's paper money in one classroom; corrections go through the actions."""

    classroom_path = "classroom"
    list_display = (
        "user", "classroom", "free_balance", "held_by_orders", "equity", "trading_frozen",
        "created_at",
    )  # fmt: skip
    list_filter = ("trading_frozen", ("classroom", related_only))
    search_fields = ("user__username", "user__first_name", "user__last_name", "classroom__name")
    list_select_related = ("user", "classroom")
    readonly_fields = (
        "user", "classroom", "free_balance", "held_by_orders", "equity", "trading_frozen",
        "created_at",
    )  # fmt: skip
    fields = readonly_fields
    actions = [
        "grant_or_deduct",
        "reset_to_starting_balance",
        "freeze_trading",
        "unfreeze_trading",
        "export_grades",
    ]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # accounts are opened by joining a classroom

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the ledger refers to them

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        # Value the page's accounts together, not one account (and its positions) per row.
        changelist = super().get_changelist_instance(request)
        equities = account_equities(list(changelist.result_list))
        held = order_margins([account.pk for account in changelist.result_list])
        for account in changelist.result_list:
            setattr(account, "current_equity", equities[account.pk])  # noqa: B010
            setattr(account, "order_margin", held.get(account.pk, ZERO))  # noqa: B010
        return changelist

    @admin.display(description="free balance", ordering="balance")
    def free_balance(self, account: TradingAccount) -> str:
        return money_text(account.balance, account.classroom.currency)

    @admin.display(description="held by orders")
    def held_by_orders(self, account: TradingAccount) -> str:
        """What the account's resting orders hold out of its free balance (order margin)."""
        cached = getattr(account, "order_margin", None)
        value = cached if cached is not None else order_margins([account.pk]).get(account.pk, ZERO)
        return money_text(value, account.classroom.currency)

    @admin.display(description="equity")
    def equity(self, account: TradingAccount) -> str:
        cached = getattr(account, "current_equity", None)
        value = cached if cached is not None else account_equities([account])[account.pk]
        return money_text(value, account.classroom.currency)

    @admin.action(description="Grant or deduct paper money", permissions=["change"])
    def grant_or_deduct(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        form = AdjustForm(request.POST if self.confirmed(request) else None)
        if form.is_valid():
            amount = form.signed_amount()
            try:
                with transaction.atomic():
                    self.claim_confirmation(request)
                    accounts_adjust(
                        account_ids=[account.pk for account in queryset],
                        amount=amount,
                        reason=form.cleaned_data["reason"],
                        actor_id=request.user.pk,
                    )
                    for account in queryset:
                        self.log_change(
                            request,
                            account,
                            f"{'Granted' if amount > 0 else 'Deducted'} {written(abs(amount))}: "
                            f"{form.cleaned_data['reason']}",
                        )
            except AlreadyConfirmed as exc:
                self.already_confirmed(request, exc)
                return None
            except errors.DomainError as exc:
                form.add_error(None, f"Nothing was changed. {exc.message}")
            else:
                verb = "Granted" if amount > 0 else "Deducted"
                self.message_user(
                    request,
                    f"{verb} {written(abs(amount))} {'to' if amount > 0 else 'from'} "
                    f"{len(queryset)} account(s).",
                )
                return None
        return self.confirmation(
            request,
            queryset,
            action="grant_or_deduct",
            title="Grant or deduct paper money",
            question="Move paper money between the house and these accounts?",
            consequence="Each account gets its own ledger transaction with your reason.",
            form=form,
        )

    @admin.action(description="Reset to the starting balance", permissions=["change"])
    def reset_to_starting_balance(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:

        def apply(account: TradingAccount) -> str:
            account_reset(account_id=account.pk, actor_id=request.user.pk)
            return "Reset to the starting balance."

        return self.confirm_then_each(
            request,
            queryset,
            apply=apply,
            lock_first=lock_accounts_with_open_positions,
            done="Reset {count} account(s).",
            action="reset_to_starting_balance",
            title="Reset to the starting balance",
            question="Reset these accounts to their classroom's starting balance?",
            consequence="" if self.confirmed(request) else reset_consequence(queryset),
            confirm_label="Yes, reset",
        )

    def _freeze(self, request: HttpRequest, queryset: QuerySet[Any], frozen: bool) -> Any:
        verb = "Freeze" if frozen else "Unfreeze"
        action = "freeze_trading" if frozen else "unfreeze_trading"

        def apply(account: TradingAccount) -> str | None:
            if account.trading_frozen == frozen:
                return None  # already so: nothing to log or count
            account_set_frozen(account_id=account.pk, frozen=frozen)
            return f"{verb} trading."

        return self.confirm_then_each(
            request,
            queryset,
            apply=apply,
            done=f"{'Froze' if frozen else 'Unfroze'} trading on {{count}} account(s).",
            nothing=(
                "Nothing was changed: the selected accounts were frozen already."
                if frozen
                else "Nothing was changed: none of the selected accounts was frozen."
            ),
            action=action,
            title=f"{verb} trading",
            question=f"{verb} trading on these accounts?",
            consequence=(
                "Frozen accounts cannot open positions or place orders; open positions "
                "stay open and can still be liquidated or closed."
                if frozen
                else ""
            ),
        )

    @admin.action(description="Freeze trading", permissions=["change"])
    def freeze_trading(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        return self._freeze(request, queryset, True)

    @admin.action(description="Unfreeze trading", permissions=["change"])
    def unfreeze_trading(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        return self._freeze(request, queryset, False)

    @admin.action(description="Export grades (CSV)", permissions=["view"])
    def export_grades(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        if not self.confirmed(request):
            return self.confirmation(
                request,
                queryset,
                action="export_grades",
                title="Export grades",
                question="Download the grades of these students as CSV?",
                confirm_label="Download",
            )
        rows = []
        by_classroom: dict[int, list[int]] = {}
        for account in queryset:
            by_classroom.setdefault(account.classroom_id, []).append(account.pk)
            self.log_change(request, account, "Exported the grade.")
        for classroom in Classroom.objects.filter(pk__in=by_classroom).order_by("name", "pk"):
            grades = classroom_grades(
                classroom_id=classroom.pk, account_ids=by_classroom[classroom.pk]
            )
            rows += [(classroom, g) for g in grades]
        stamp = timezone.now().strftime("%Y%m%d-%H%M")
        return self.grades_response(request, rows, f"grades-{stamp}.csv")


# --- the market -----------------------------------------------------------------------


class PriceFeedInline(admin.StackedInline):
    model = PriceFeed
    form = EditedFieldsForm  # each tick moves the feed's step and tick slot
    formfield_overrides = PLAIN_NUMBERS  # 0.0008 in the box, not 0.00080000
    extra = 0
    max_num = 1
    fields = (
        "kind",
        "is_active",
        "seed",
        "volatility",
        "jump_probability",
        "jump_size",
        "replay_speed",
        "step",
        "replay_started_at",
    )
    readonly_fields = ("step", "replay_started_at")


class ScenarioInline(ReadOnlyInline):
    model = Scenario
    fields = ("kind", "status", "target_price", "percent", "duration_seconds", "created_at")
    readonly_fields = fields
    show_change_link = True


admin.site.unregister(Instrument)


class ScenarioForm(forms.Form):
    kind = forms.ChoiceField(choices=Scenario.Kind.choices)
    percent = WrittenDecimalField(
        required=False, max_digits=9, decimal_places=4, help_text="For a move: e.g. -30."
    )
    target_price = WrittenDecimalField(
        required=False, max_digits=28, decimal_places=10, help_text="For setting the price."
    )
    duration_seconds = WrittenDecimalField(
        required=False,
        initial=Decimal(0),
        max_digits=10,
        decimal_places=3,
        help_text="How long a move takes; 0 moves on the next tick.",
    )

    def clean(self) -> dict[str, Any]:
        # A field the chosen kind does not use would be stored and listed, but do nothing:
        # say so rather than start something other than what the instructor typed.
        data = super().clean() or {}
        kind = data.get("kind")
        if kind == Scenario.Kind.MOVE:
            if data.get("percent") is None and "percent" not in self.errors:
                self.add_error("percent", "Enter the move in percent, e.g. -30 for a 30% fall.")
            if data.get("target_price") is not None:
                self.add_error(
                    "target_price", "A move starts from the current mark: leave this empty."
                )
        elif kind == Scenario.Kind.SET_PRICE:
            if data.get("target_price") is None and "target_price" not in self.errors:
                self.add_error("target_price", "Enter the price to set.")
            if data.get("percent") is not None:
                self.add_error("percent", "Setting the price takes no percent: leave this empty.")
            if data.get("duration_seconds"):
                self.add_error(
                    "duration_seconds", "The price is set on the next tick: leave this at 0."
                )
        return data


def current_marks(instruments: QuerySet[Any]) -> str:
    """The marks a scenario would start from, on each instrument's tick: "Marks now: ..."."""
    marks = []
    for instrument in instruments.select_related(None).order_by("symbol", "pk"):
        mark = instrument.mark_price
        shown_mark = "no mark yet" if mark is None else price_text(mark, instrument.tick_size)
        marks.append(f"{instrument.symbol} {shown_mark}")
    return f"Marks now: {', '.join(marks)}."


def scenario_text(scenario: Scenario) -> str:
    """What a scenario does, as the instructor typed it: "move by -30% over 60 s"."""
    if scenario.kind == Scenario.Kind.SET_PRICE and scenario.target_price is not None:
        return f"set the price to {written(scenario.target_price)}"
    if scenario.percent is None:
        return scenario.get_kind_display().lower()
    over = (
        f"over {written(scenario.duration_seconds)} s"
        if scenario.duration_seconds
        else "on the next tick"
    )
    return f"move by {written(scenario.percent)}% {over}"


class ReplayForm(forms.Form):
    csv_file = forms.FileField(
        label="CSV file", help_text="Rows of time (seconds or ISO timestamp) and price."
    )
    speed = WrittenDecimalField(initial=Decimal(1), max_digits=10, decimal_places=4)


MAX_REPLAY_BYTES = 5 * 1024 * 1024


@admin.register(Instrument)
class InstrumentAdmin(InstructorActionsMixin, BaseInstrumentAdmin):
    """An instrument with its margin tiers, its price feed and its scenarios."""

    inlines = (MarginTierInline, PriceFeedInline, ScenarioInline)  # type: ignore[assignment]
    actions = ["start_scenario", "replay_csv"]

    @admin.action(description="Start a scenario (set the price or move it)", permissions=["change"])
    def start_scenario(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        form = ScenarioForm(request.POST if self.confirmed(request) else None)
        if form.is_valid():
            data = form.cleaned_data
            what = ""
            try:
                with transaction.atomic():
                    self.claim_confirmation(request)
                    for instrument in queryset:
                        scenario = scenario_start(
                            instrument_id=instrument.pk,
                            kind=data["kind"],
                            percent=data["percent"],
                            target_price=data["target_price"],
                            duration_seconds=data["duration_seconds"] or 0,
                            created_by_id=request.user.pk,
                        )
                        what = scenario_text(scenario)
                        self.log_addition(request, scenario, f"Started: {what}.")
                        self.log_change(
                            request, instrument, f"Started scenario #{scenario.pk}: {what}."
                        )
            except AlreadyConfirmed as exc:
                self.already_confirmed(request, exc)
                return None
            except errors.DomainError as exc:
                field = exc.field if exc.field in form.fields else None
                form.add_error(field, f"Nothing was started. {exc.message}")
            else:
                self.message_user(
                    request,
                    f"Started a scenario on {len(queryset)} instrument(s): {what}.",
                )
                return None
        return self.confirmation(
            request,
            queryset,
            action="start_scenario",
            title="Start a scenario",
            question="Move the market of these instruments?",
            consequence="An active scenario on the same instrument is cancelled first. "
            + current_marks(queryset),
            form=form,
            confirm_label="Start",
        )

    @admin.action(description="Replay an uploaded CSV", permissions=["change"])
    def replay_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        confirmed = self.confirmed(request)
        form = ReplayForm(request.POST if confirmed else None, request.FILES if confirmed else None)
        if form.is_valid():
            upload = form.cleaned_data["csv_file"]
            if upload.size > MAX_REPLAY_BYTES:
                form.add_error("csv_file", "The file is larger than 5 MB.")
            else:
                content = upload.read()
                try:
                    with transaction.atomic():
                        self.claim_confirmation(request)
                        for instrument in queryset:
                            feed = replay_upload(
                                instrument_id=instrument.pk,
                                csv_text=content,
                                speed=form.cleaned_data["speed"],
                            )
                            self.log_change(
                                request,
                                instrument,
                                f"Replaying {feed.replay_points.count()} prices from "
                                f"{upload.name}.",
                            )
                except AlreadyConfirmed as exc:
                    self.already_confirmed(request, exc)
                    return None
                except errors.DomainError as exc:
                    field = "speed" if exc.field == "speed" else "csv_file"
                    form.add_error(field, f"Nothing was changed. {exc.message}")
                else:
                    self.message_user(request, f"Replay started on {len(queryset)} instrument(s).")
                    return None
        return self.confirmation(
            request,
            queryset,
            action="replay_csv",
            title="Replay an uploaded CSV",
            question="Replace the price feed of these instruments with a replay?",
            form=form,
            confirm_label="Upload and start",
        )


class ReplayPointInline(ReadOnlyInline):
    model = ReplayPoint
    fields = ("offset_seconds", "price")
    readonly_fields = fields
    max_num = 0


@admin.register(PriceFeed)
class PriceFeedAdmin(ClassroomScopedAdmin):
    """Where each instrument's next mark comes from."""

    classroom_path = "instrument__classroom"
    ordering = ("instrument__classroom_id", "instrument__symbol")
    list_display = ("instrument", "kind", "is_active", "volatility", "step")
    list_filter = ("kind", "is_active", ("instrument__classroom", related_only))
    search_fields = ("instrument__symbol", "instrument__classroom__name")
    list_select_related = ("instrument__classroom",)
    autocomplete_fields = ("instrument",)
    readonly_fields = ("step", "replay_started_at")
    inlines = [ReplayPointInline]


@admin.register(ReplayPoint)
class ReplayPointAdmin(ClassroomScopedAdmin):
    """Rows of uploaded replay CSVs (read-only: upload a new file to change them)."""

    classroom_path = "feed__instrument__classroom"
    read_only_records = True
    list_display = ("feed", "offset_seconds", "price")
    list_filter = (("feed__instrument", related_only),)
    list_select_related = ("feed__instrument",)


@admin.register(PriceTick)
class PriceTickAdmin(ClassroomScopedAdmin):
    """The mark history (read-only)."""

    classroom_path = "instrument__classroom"
    read_only_records = True
    # The latest marks first, of every instrument (the history keeps up to a week of them):
    # the list filter narrows it to one instrument.
    ordering = ("-created_at", "-id")
    list_display = ("instrument", "price", "created_at")
    list_filter = (("instrument", related_only),)
    list_select_related = ("instrument",)
    date_hierarchy = "created_at"


@admin.register(Scenario)
class ScenarioAdmin(InstructorActionsMixin):
    """An instructor's move of the market."""

    classroom_path = "instrument__classroom"
    list_display = (
        "instrument",
        "classroom",
        "kind",
        "status",
        "target_price",
        "percent",
        "duration_seconds",
        "created_by",
        "created_at",
    )
    # Symbols repeat across classrooms (every class may trade its own BTCUSDT).
    list_filter = ("status", "kind", ("instrument__classroom", related_only))
    search_fields = ("instrument__symbol", "instrument__classroom__name")
    list_select_related = ("instrument__classroom", "created_by")

    @admin.display(description="classroom", ordering="instrument__classroom__name")
    def classroom(self, scenario: Scenario) -> str:
        return scenario.instrument.classroom.name

    readonly_fields = (
        "instrument",
        "kind",
        "status",
        "target_price",
        "percent",
        "duration_seconds",
        "start_price",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )
    actions = ["stop_scenarios"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # started from the instruments list, through the engine's service

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Stop the selected scenarios", permissions=["change"])
    def stop_scenarios(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:

        def apply(scenario: Scenario) -> str | None:
            if scenario.status != Scenario.Status.ACTIVE:
                return None  # finished or stopped already: nothing to stop
            scenario_stop(scenario_id=scenario.pk)
            return "Stopped."

        return self.confirm_then_each(
            request,
            queryset,
            apply=apply,
            done="Stopped {count} scenario(s).",
            nothing="Nothing was stopped: none of the selected scenarios was running.",
            action="stop_scenarios",
            title="Stop scenarios",
            question="Stop these scenarios?",
            consequence="The mark stays where it is and the feed resumes from it.",
            confirm_label="Stop",
        )


@admin.register(LiquidationEvent)
class LiquidationEventAdmin(ClassroomScopedAdmin):
    """The liquidation log (read-only)."""

    classroom_path = "classroom"
    read_only_records = True
    list_display = (
        "created_at",
        "position",
        "classroom",
        "mark_price",
        "collateral_lost",
        "liquidation_fee",
        "shortfall",
        "insurance_paid",
        "adl_amount",
    )
    list_filter = (("classroom", related_only),)
    search_fields = ("=position__id", "position__account__user__username")
    list_select_related = ("position__instrument", "classroom")
    date_hierarchy = "created_at"


@admin.register(AdlFill)
class AdlFillAdmin(ClassroomScopedAdmin):
    """Positions closed by auto-deleveraging (read-only)."""

    classroom_path = "liquidation__classroom"
    read_only_records = True
    list_display = ("created_at", "position", "liquidation", "quantity", "price", "realized_pnl")
    list_filter = (("liquidation__classroom", related_only),)
    list_select_related = ("position__instrument", "liquidation")


@admin.register(MarginCall)
class MarginCallAdmin(ClassroomScopedAdmin):
    """Margin calls and how each was answered (read-only)."""

    classroom_path = "classroom"
    read_only_records = True
    list_display = ("created_at", "position", "classroom", "ratio", "outcome", "resolved_at")
    list_filter = ("outcome", ("classroom", related_only))
    search_fields = ("=position__id", "position__account__user__username")
    list_select_related = ("position__instrument", "classroom")

    @admin.display(description="margin ratio", ordering="margin_ratio")
    def ratio(self, call: MarginCall) -> str:
        # Stored as a share (0.85); the monitor and the students' pages say 85.00%.
        return f"{shown(call.margin_ratio * 100, 2):,.2f}%"


@admin.register(EngineHeartbeat)
class EngineHeartbeatAdmin(ClassroomScopedAdmin):
    """One row per engine tick (read-only)."""

    classroom_path = "instrument__classroom"
    read_only_records = True
    list_display = (
        "started_at",
        "instrument",
        "mark_price",
        "positions_checked",
        "liquidated",
        "orders_triggered",
        "margin_calls",
    )
    list_filter = (("instrument", related_only),)
    list_select_related = ("instrument",)
    date_hierarchy = "started_at"
