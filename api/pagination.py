"""Cursor pagination: stable pages while new rows arrive, ``?cursor=`` and ``?limit=``."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class NewestFirst(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200


class OldestFirst(NewestFirst):
    ordering = "id"


class PriceHistory(OldestFirst):
    page_size = 500
    max_page_size = 1000
