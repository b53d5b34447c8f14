"""JSON responses whose ETag is a hash of exactly the bytes sent (CONTRACT §3)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from django.http import HttpRequest, HttpResponse

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


def json_bytes(body: Any) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        # A lone surrogate that slipped in from elsewhere: escaped ASCII JSON is still valid JSON.
        return json.dumps(body, separators=(",", ":")).encode()


def strong_etag(content: bytes) -> str:
    digest = hashlib.sha256(content).digest()
    return '"' + base64.urlsafe_b64encode(digest).decode().rstrip("=") + '"'


def _matches(header: str, etag: str, *, weak: bool = False) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    if weak:  # If-None-Match uses the weak comparison (RFC 9110 §13.1.2)
        candidates = [c[2:] if c.startswith("W/") else c for c in candidates]
    return "*" in candidates or etag in candidates


def json_response(request: HttpRequest, body: Any, *, status: int = 200, content_type: str = JSON,
                  etag: bool = False, headers: dict[str, str] | None = None) -> HttpResponse:
    content = json_bytes(body)
    response_headers = dict(headers or {})
    if etag:
        tag = strong_etag(content)
        response_headers["ETag"] = tag
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and _matches(if_none_match, tag, weak=True) and request.method in ("GET", "HEAD"):
            return HttpResponse(status=304, headers=response_headers)
    return HttpResponse(content, status=status, content_type=content_type, headers=response_headers)


def if_match_version(request: HttpRequest, current_body: Any) -> bool:
    """True when the request has no If-Match or it names the current representation's ETag."""
    header = request.headers.get("If-Match")
    if not header:
        return True
    return _matches(header, strong_etag(json_bytes(current_body)))
