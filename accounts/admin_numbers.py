"""How the admin shows stored decimals: as written (10,000 or 0.0008), never padded to the
column's places (10000.00000000, 0.00080000).

Django's admin renders every ``DecimalField`` it shows read-only (list columns, read-only
fields, read-only inlines) with ``display_for_field``, which pads the value to the column's
``decimal_places`` and offers no hook to change that per field. Every Ringfence column keeps
8 or 10 places, so a scenario's -30% read "-30.0000" and a tier's maintenance amount
"50.00000000". ``install`` wraps that one function for decimals and leaves every other kind
of field to Django. The value is shown exactly (never rounded): these pages are where an
instructor checks what was stored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.admin import helpers, utils
from django.contrib.admin.templatetags import admin_list
from django.db import models

_django_display_for_field = utils.display_for_field


def written(value: Decimal) -> str:
    """A stored decimal as people write it, with thousands separators: 10,000; -0.5; 0."""
    if value == 0:
        return "0"  # also for 0E-8 and -0
    return f"{value.normalize():,f}"


def display_for_field(
    value: Any, field: Any, empty_value_display: str, avoid_link: bool = False
) -> Any:
    if (
        isinstance(field, models.DecimalField)
        and isinstance(value, Decimal)
        and value.is_finite()
        and not getattr(field, "flatchoices", None)
    ):
        return written(value)
    return _django_display_for_field(value, field, empty_value_display, avoid_link)


def install() -> None:
    """Make the admin's lists and read-only fields show decimals as written."""
    # The change list and the read-only fields each imported the function by name.
    for module in (utils, helpers, admin_list):
        module.display_for_field = display_for_field  # type: ignore[attr-defined]
