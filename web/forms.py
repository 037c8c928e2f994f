"""Forms of the learner pages: they check the shape of the input; the services check the rules."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.admin import forms as admin_forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator

from accounts.errors import DomainError
from accounts.form_fields import WholeNumberField, WrittenDecimalField
from accounts.models import User
from accounts.money import MONEY_PLACES, PRICE_PLACES, QUANTITY_PLACES, plain
from config.cache import note_cache_unreachable
from positions.models import Instrument, Order, Side
from web import attempts


def positive(value: Decimal) -> None:
    if value is not None and value <= 0:
        raise ValidationError("Must be greater than zero.", code="not_positive")


def money_field(
    *, required: bool = False, allow_zero: bool = False, **kwargs: object
) -> WrittenDecimalField:
    return WrittenDecimalField(
        required=required,
        max_digits=24,
        decimal_places=MONEY_PLACES,
        # One rule, one message: "positive" already refuses what a minimum of 0 would.
        validators=[] if allow_zero else [positive],
        min_value=Decimal(0) if allow_zero else None,
        **kwargs,  # type: ignore[arg-type]
    )


def price_field(label: str, **kwargs: object) -> WrittenDecimalField:
    return WrittenDecimalField(
        label=label,
        required=False,
        max_digits=28,
        decimal_places=PRICE_PLACES,
        validators=[positive],
        **kwargs,  # type: ignore[arg-type]
    )


def quantity_field(**kwargs: object) -> WrittenDecimalField:
    return WrittenDecimalField(
        max_digits=24,
        decimal_places=QUANTITY_PLACES,
        validators=[positive],
        **kwargs,  # type: ignore[arg-type]
    )


def add_domain_error(form: forms.BaseForm, error: DomainError) -> None:
    """Show a service's refusal next to the field it names, or above the form (also when
    the field is hidden, as no error is shown next to it)."""
    named = form.fields.get(error.field or "")
    field = error.field if named is not None and not named.widget.is_hidden else None
    form.add_error(field, error.message)


def one_time_order_id() -> str:
    """A fresh client_order_id for a form that places an order (or client_request_id for one
    that changes margin): a second submit of the same rendered form finds the first one's
    order or margin change instead of trading or moving the margin again."""
    return f"web-{uuid.uuid4().hex}"


def one_time_order_id_field() -> forms.CharField:
    # A callable initial: every form rendered unbound gets its own; a bound form keeps the
    # one it was sent with (nothing was written when it comes back with errors). The service
    # checks its length: its refusal is shown above the form, where a hidden field's is not.
    return forms.CharField(widget=forms.HiddenInput, required=False, initial=one_time_order_id)


class LimitedSignIn:
    """Stops checking passwords for a username from an address after too many failures.

    Mixed into Django's sign-in forms (the site's and the admin's): only a password that was
    checked and refused counts, and only a successful sign-in clears the count.
    """

    request: Any
    data: Any
    user_cache: Any

    def clean(self) -> dict[str, Any]:
        if self.request is None:
            return super().clean()  # type: ignore[misc,no-any-return]
        try:
            tries = attempts.sign_in(self.request, str(self.data.get("username", "")))
            if tries.blocked():
                raise forms.ValidationError(attempts.TOO_MANY, code="too_many_attempts")
            checked = bool(self.data.get("username")) and bool(self.data.get("password"))
            try:
                cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
            except forms.ValidationError:
                if checked:
                    tries.failed()
                raise
        except attempts.Unavailable as exc:
            # Refused without saying whether the password was right: no guess goes uncounted.
            note_cache_unreachable(self.request, exc)
            raise forms.ValidationError(
                attempts.SIGN_IN_UNAVAILABLE, code="sign_in_unavailable"
            ) from None
        if self.user_cache is not None:
            tries.clear()
        return cleaned


class SignInForm(LimitedSignIn, AuthenticationForm):
    """The site's sign-in form."""


class AdminSignInForm(LimitedSignIn, AdminAuthenticationForm):
    """The admin's sign-in form: instructors' accounts are the ones most worth guessing."""


class LimitedPasswordChange:
    """Checks the old password of a password change on the sign-in's count.

    Whoever finds a computer left signed in could otherwise guess the password there without
    limit, and then set their own. A refused old password counts as a failed sign-in for the
    user from this address, and a blocked sign-in checks no old password either.
    """

    request: Any
    user: Any

    def __init__(self, user: Any, *args: Any, request: Any = None, **kwargs: Any) -> None:
        self.request = request
        super().__init__(user, *args, **kwargs)  # type: ignore[call-arg]

    def clean_old_password(self) -> str:
        if self.request is None:
            return super().clean_old_password()  # type: ignore[misc,no-any-return]
        try:
            tries = attempts.sign_in(self.request, self.user.get_username())
            if tries.blocked():
                raise forms.ValidationError(attempts.TOO_MANY, code="too_many_attempts")
            try:
                old: str = super().clean_old_password()  # type: ignore[misc]
            except forms.ValidationError:
                tries.failed()
                raise
        except attempts.Unavailable as exc:
            # Refused without saying whether the password was right: no guess goes uncounted.
            note_cache_unreachable(self.request, exc)
            raise forms.ValidationError(
                attempts.SIGN_IN_UNAVAILABLE, code="sign_in_unavailable"
            ) from None
        tries.clear()
        return old


class PasswordChangeForm(LimitedPasswordChange, auth_forms.PasswordChangeForm):
    """The site's password change form."""


class AdminPasswordChangeForm(LimitedPasswordChange, admin_forms.AdminPasswordChangeForm):
    """The admin's password change form."""


class SignUpForm(UserCreationForm):  # type: ignore[type-arg]
    join_code = forms.CharField(
        max_length=16,
        help_text="The code your instructor gave you.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
    )

    class Meta(UserCreationForm.Meta):  # type: ignore[name-defined]
        model = User
        fields = ("username",)


class JoinForm(forms.Form):
    join_code = forms.CharField(
        max_length=16, widget=forms.TextInput(attrs={"autocomplete": "off"})
    )


class InstrumentChoiceField(forms.ModelChoiceField):  # type: ignore[type-arg]
    """The ticket's instrument. One that stopped trading after the ticket was opened is
    offered only to the ticket that names it, to be refused: its name says so."""

    def label_from_instance(self, obj: Any) -> str:
        symbol = str(obj.symbol)
        return symbol if obj.is_tradable else f"{symbol} (not open for trading)"


class TradeForm(forms.Form):
    instrument = InstrumentChoiceField(queryset=Instrument.objects.none(), empty_label=None)
    side = forms.ChoiceField(choices=Side.choices, widget=forms.RadioSelect, initial=Side.LONG)
    type = forms.ChoiceField(
        label="Order type", choices=Order.Type.choices, initial=Order.Type.MARKET
    )
    quantity = quantity_field(required=False, help_text="How much to buy or sell.")
    notional = money_field(label="or notional", help_text="Value at the current price.")
    leverage = WholeNumberField(min_value=1, initial=10)
    extra_collateral = money_field(
        allow_zero=True,
        label="Extra collateral",
        help_text="Optional: collateral beyond the margin moves the liquidation price away, "
        "and is at risk too.",
    )
    price = price_field("Limit price", help_text="The order fills at this price or better.")
    stop_price = price_field(
        "Stop price", help_text="The order fills at market once the mark reaches it."
    )
    take_profit = price_field(
        "Take-profit", help_text="Optional: takes the gain, closing at market at this mark."
    )
    stop_loss = price_field(
        "Stop-loss", help_text="Optional: cuts the loss before liquidation, closing at this mark."
    )
    client_order_id = one_time_order_id_field()

    def __init__(
        self, *args: object, instruments, max_leverage: int = 125, **kwargs: object
    ) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        field = self.fields["instrument"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = instruments
        leverage = self.fields["leverage"]
        assert isinstance(leverage, forms.IntegerField)
        leverage.max_value = max_leverage
        leverage.validators.append(MaxValueValidator(max_leverage))
        leverage.widget = forms.NumberInput(
            attrs={"type": "range", "min": 1, "max": max_leverage, "step": 1, "class": "slider"}
        )

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if (
            not data.get("quantity")
            and not data.get("notional")
            and not self.has_error("quantity")
            and not self.has_error("notional")
        ):
            self.add_error("quantity", "Enter a quantity or a notional.")
        if data.get("quantity") and data.get("notional"):
            self.add_error("notional", "Give a quantity or a notional, not both.")
        order_type = data.get("type")
        # A price the order type does not use would be ignored: a learner who typed a limit
        # on a market order would buy at the market while expecting their limit.
        if order_type != Order.Type.LIMIT and data.get("price") is not None:
            self.add_error(
                "price", "Only a limit order uses a limit price: choose Limit, or clear it."
            )
        if order_type != Order.Type.STOP and data.get("stop_price") is not None:
            self.add_error(
                "stop_price", "Only a stop order uses a stop price: choose Stop, or clear it."
            )
        if order_type == Order.Type.LIMIT and not data.get("price") and not self.has_error("price"):
            self.add_error("price", "A limit order needs a price.")
        if (
            order_type == Order.Type.STOP
            and not data.get("stop_price")
            and not self.has_error("stop_price")
        ):
            self.add_error("stop_price", "A stop order needs a stop price.")
        return data


class MarginForm(forms.Form):
    action = forms.ChoiceField(choices=[("add", "Add margin"), ("remove", "Remove margin")])
    amount = money_field(required=True)
    client_request_id = one_time_order_id_field()


class CloseForm(forms.Form):
    quantity = quantity_field(required=False, help_text="Leave empty to close everything.")
    client_order_id = one_time_order_id_field()


class OrderChangeForm(forms.Form):
    """A resting order's new quantity and its price: the limit price of a limit order, the
    stop price of a stop order (the other price field is not shown)."""

    quantity = quantity_field()
    price = price_field("Limit price")
    stop_price = price_field("Stop price")
    client_order_id = one_time_order_id_field()

    def __init__(self, *args: Any, order: Order, **kwargs: Any) -> None:
        # As people write them (0.1, 59000), not as stored (59000.0000000000).
        kwargs.setdefault(
            "initial",
            {
                name: None if value is None else plain(value)
                for name, value in (
                    ("quantity", order.quantity),
                    ("price", order.price),
                    ("stop_price", order.stop_price),
                )
            },
        )
        super().__init__(*args, **kwargs)
        kept = {"limit": "price", "stop": "stop_price"}.get(str(order.type))
        for name in ("price", "stop_price"):
            if name == kept:
                self.fields[name].required = True
            else:
                del self.fields[name]


class TpSlForm(forms.Form):
    take_profit = price_field("Take-profit")
    stop_loss = price_field("Stop-loss")
