"""Cells of the CSV exports, written so that a spreadsheet shows text as text.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage
return before one) as a formula, even in a CSV file. The text in Ringfence's exports comes
from people: an instructor's reason for a grant, an instrument's symbol, a classroom's name,
a username. Opened by someone else, such a formula could fetch a URL carrying the sheet's
other cells, so text starting that way is written with a leading apostrophe, which
spreadsheets read as "this is text" and do not show.
"""

from __future__ import annotations

from decimal import Decimal

from accounts.money import plain

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: object) -> object:
    """``value`` as a CSV cell: text that a spreadsheet would run as a formula is quoted.

    Numbers pass unchanged: a negative amount is a number, not a formula.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def cell(value: object) -> object:
    """Any value as a CSV cell: nothing as empty, an amount as written (0, 60000, -12.5; never
    0E-8 or 6E+4), text through ``text_cell``."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return plain(value) if value else "0"
    return text_cell(value)
