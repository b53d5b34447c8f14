"""A JSON body parser that turns every malformed body into 400 ``malformed_body``: invalid JSON,
NaN/Infinity, nesting deep enough to exhaust the parser, and lone surrogates (which cannot be stored,
logged or echoed back as UTF-8)."""

from __future__ import annotations

import json

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_DEPTH = 64


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _depth_ok(text: str) -> bool:
    """Bracket depth outside strings, checked before parsing (the parser itself recurses)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _no_duplicate_names(pairs: list[tuple[str, object]]) -> dict:
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)):
        raise ValueError("duplicate member names (not I-JSON, RFC 7493)")
    return dict(pairs)


def loads_strict(raw: bytes) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError("the body is not UTF-8") from exc
    if not _depth_ok(text):
        raise ParseError(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_names)
        # Escaped lone surrogates ("\ud800") parse into strings that cannot be encoded as UTF-8.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise ParseError(f"the body is not valid JSON: {exc.__class__.__name__}") from exc
    return data


class StrictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        return loads_strict(stream.read())
