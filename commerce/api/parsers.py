"""The API's request parsers: JSON only, refused cleanly when it cannot be read."""

from collections.abc import Mapping
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class ApiJSONParser(JSONParser):
    """JSON, with nesting too deep for the decoder answered as malformed input."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError as error:
            raise ParseError("JSON parse error - nested too deeply.") from error


class LenientJSONParser(ApiJSONParser):
    """Accept NaN and Infinity so the field they sit in can be named in the error."""

    strict = False
