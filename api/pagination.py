"""Cursor pagination: stable pages while new rows arrive, ``?cursor=`` and ``?limit=``."""

from __future__ import annotations

import re
from base64 import b64decode
from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request

from accounts import errors

_WHOLE_NUMBER = re.compile(r"[0-9]+")


def whole_number(raw: object) -> int | None:
    """A query parameter written as plain ASCII digits, else None: Python's ``int`` would
    also take ``" 5"``, ``"+5"``, ``"1_0"`` and other scripts' digits (``"٣"``), which the
    API refuses in bodies too."""
    text = str(raw)
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


class NewestFirst(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def get_page_size(self, request: Request) -> int:
        # DRF falls back to the default page size for a limit it cannot read; a bot that
        # asked for 0 or "ten" rows should learn that it was not understood.
        raw = request.query_params.get("limit") or ""
        if not raw:  # as the views read every empty parameter: not sent
            return self.page_size
        limit = whole_number(raw) or 0
        if limit < 1:
            raise errors.DomainError(
                f"limit is a whole number from 1 to {self.max_page_size}.", field="limit"
            )
        return min(limit, self.max_page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == "limit":
                parameter["description"] = (
                    f"Rows per page, 1 to {self.max_page_size} (default {self.page_size}); "
                    "more is cut to the maximum."
                )
                parameter["schema"]["minimum"] = 1
        return parameters

    def decode_cursor(self, request: Request) -> Cursor | None:
        # DRF answers an unreadable cursor with 404, which a bot would take for a missing
        # list, and its decoding skips what is not base64 ("!!!" read as the first page).
        # Every ordering here is by id, so a cursor's position is a whole number.
        encoded = request.query_params.get(self.cursor_query_param)
        if not encoded:
            return None  # an empty ?cursor= is the first page, as an empty ?limit= is the default
        try:
            valid = encoded is None or bool(b64decode(encoded.encode("ascii"), validate=True))
            cursor = super().decode_cursor(request)
        except (NotFound, ValueError):
            valid, cursor = False, None
        if cursor is not None and cursor.position is not None:
            valid = valid and str(cursor.position).isdigit()
        if not valid:
            raise errors.DomainError(
                "cursor is not one this API gave; use the next or previous link as it is.",
                field="cursor",
            )
        return cursor


class OldestFirst(NewestFirst):
    ordering = "id"


class PriceHistory(OldestFirst):
    page_size = 500
    max_page_size = 1000
