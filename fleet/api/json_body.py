"""Every JSON body the API reads, refused at the parser when it holds what no schema sees and
PostgreSQL cannot store: a non-finite number (NaN, Infinity, -Infinity, or a literal such
as 1e999 that overflows to infinity) or a lone UTF-16 surrogate ("\\ud800") in any string
or key. Python's json module accepts both; jsonb and text columns refuse them after
validation has passed, which was a 500. Here they are a 422 naming the field (the dotted
path to the value, as schema errors name fields)."""

import json
import math
import re
from typing import Any, cast

from django.http import HttpRequest
from ninja.parser import Parser
from ninja.types import DictStrAny

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json joins a valid pair into one character


class _NonFinite:
    """Stands in for a non-finite number while parsing, to be found with its path."""


NON_FINITE = _NonFinite()


class HostileJsonValue(ValueError):
    """A value the API refuses before validation; `field` is its dotted path."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field or 'body'}: {message}")
        self.field = field
        self.message = message


def _float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NON_FINITE


def _refuse_hostile(document: Any) -> None:
    """Walk the parsed body (iteratively: a deep document cannot exhaust the stack) and
    raise for the first non-finite number or lone surrogate, naming where it is."""
    stack: list[tuple[tuple[str, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if value is NON_FINITE:
            raise HostileJsonValue(
                ".".join(path), "must be a finite number (NaN and Infinity are not JSON)"
            )
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise HostileJsonValue(
                    ".".join(path), "must be valid Unicode (it holds an unpaired surrogate)"
                )
        elif isinstance(value, dict):
            for key, item in reversed(value.items()):
                if _LONE_SURROGATE.search(key):
                    raise HostileJsonValue(
                        ".".join(path),
                        "has a key that is not valid Unicode (an unpaired surrogate)",
                    )
                stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), item) for i, item in reversed(list(enumerate(value))))


class StrictJsonParser(Parser):
    """Ninja's parser with the refusals above. Ninja turns any parser error into a 400;
    config/api.py finds a HostileJsonValue behind it and answers 422 naming the field."""

    def parse_body(self, request: HttpRequest) -> DictStrAny:
        document = json.loads(
            request.body, parse_constant=lambda _name: NON_FINITE, parse_float=_float
        )
        _refuse_hostile(document)
        return cast(DictStrAny, document)
