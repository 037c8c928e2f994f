"""Form fields shared by the learner pages and the admin: numbers read as people write them."""

from __future__ import annotations

from decimal import InvalidOperation
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from accounts.money import is_written_whole_number, parse_decimal


class WholeNumberField(forms.IntegerField):
    """A whole number in ASCII digits (a leverage, a maximum leverage, a feed's seed).

    Django reads the text with Python's ``int``, which also takes ``"1_0"`` as 10 and other
    scripts' digits (full-width, Arabic-Indic): refused, by the rule the API's
    ``WholeNumberInput`` applies to the same fields.
    """

    default_error_messages = {
        "digits": "Type a whole number with the digits 0 to 9 only, without separators: "
        "10, not 1_0.",
    }

    def to_python(self, value: Any) -> int | None:
        if isinstance(value, str) and value.strip() and not is_written_whole_number(value):
            # What is no whole number at all ("x", "2.5") gets Django's "Enter a whole
            # number." from here; only what ``int`` would have misread gets past it.
            super().to_python(value)
            raise ValidationError(self.error_messages["digits"], code="invalid")
        result: int | None = super().to_python(value)
        return result


class WrittenDecimalField(forms.DecimalField):
    """A decimal in ASCII digits (an amount, a price, a quantity, a rate).

    Django reads the text with ``Decimal``, which also takes ``"0_1"`` as 1 and other
    scripts' digits: refused, by the rule the services apply to what the API sends
    (``parse_decimal``).
    """

    default_error_messages = {
        "digits": "Type a number with the digits 0 to 9 and a point only, without separators: "
        "1000.5, not 1_000.5.",
    }

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            try:
                parse_decimal(value)
            except InvalidOperation:
                # As for whole numbers: what is no number at all gets Django's message here.
                super().to_python(value)
                raise ValidationError(self.error_messages["digits"], code="invalid") from None
        return super().to_python(value)
