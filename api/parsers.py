"""The API's JSON parser: numbers with a fraction or an exponent are read as Decimal."""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys, so {"stop_loss": "59000", ..., "stop_loss": null}
    # would place an order without the stop-loss its author saw first; the views refuse a
    # query parameter sent twice for the same reason.
    seen: dict[str, Any] = {}
    repeated: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in seen:
            repeated[key] = [f"Send {key} once."]
        seen[key] = value
    if repeated:
        raise ValidationError(repeated)
    return seen


class ExactJSONParser(JSONParser):
    """JSON as DRF parses it, except that ``0.1`` arrives as ``Decimal("0.1")``.

    DRF's parser reads JSON numbers as binary floats, so ``999999999.99999999`` (which a bot
    may well send unquoted) would arrive as ``1000000000.0`` and an amount would change
    before any validation saw it. ``NaN`` and ``Infinity`` are refused, as DRF's strict mode
    does.
    """

    def parse(
        self,
        stream: IO[bytes],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            decoded = codecs.getreader(encoding)(stream)
            return json.load(
                decoded,
                parse_float=Decimal,
                parse_constant=_refuse_constant,
                object_pairs_hook=_refuse_repeated_keys,
            )
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            # json decodes nested arrays and objects recursively: a body of 100,000 "[" runs
            # out of stack long before it runs out of the upload size limit.
            raise ParseError("JSON parse error - nested too deeply.") from None
