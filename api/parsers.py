"""The API's JSON parser: numbers with a fraction or an exponent are read as Decimal."""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


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
            return json.load(decoded, parse_float=Decimal, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            # json decodes nested arrays and objects recursively: a body of 100,000 "[" runs
            # out of stack long before it runs out of the upload size limit.
            raise ParseError("JSON parse error - nested too deeply.") from None
