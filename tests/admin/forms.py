"""Turn a rendered admin change form back into POST data, as a browser would submit it."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from django import forms


def _put(data: dict[str, Any], form: forms.BaseForm, name: str) -> None:
    bound = form[name]
    value = bound.value()
    widget = bound.field.widget
    key = form.add_prefix(name)
    if isinstance(widget, forms.MultiWidget):
        parts = widget.decompress(value) or []
        for i, part in enumerate(parts):
            data[f"{key}_{i}"] = "" if part is None else str(part)
        return
    if isinstance(widget, forms.CheckboxInput):
        if value:
            data[key] = "on"
        return
    if value is None:
        data[key] = ""
    elif isinstance(value, datetime | date):
        data[key] = value.isoformat()
    elif isinstance(value, list | tuple):
        data[key] = [str(v) for v in value]
    else:
        data[key] = str(value)


def admin_form_data(response) -> dict[str, Any]:
    """Every field of the admin form and its inline formsets, with their current values."""
    data: dict[str, Any] = {}
    form = response.context["adminform"].form
    for name in form.fields:
        _put(data, form, name)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        for sub in formset.forms:
            for name in sub.fields:
                _put(data, sub, name)
    return data
