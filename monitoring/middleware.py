"""Request metrics, and the probes answered before anything else.

``MonitoringMiddleware`` goes first in ``MIDDLEWARE``:
- ``GET``/``HEAD`` ``/healthz`` and ``/readyz`` are answered here, before the host check and the HTTPS
  redirect: orchestrators probe a worker's own address over plain HTTP, and neither answer uses the
  host name or leaks more than which part is failing.
- Every other request is timed to its response and counted by route pattern (``api/v1/resolve/<str:ucri>``,
  never the raw path, so labels stay bounded), method and status class. Requests no route matched
  count as ``<unmatched>``, static files served by WhiteNoise as ``<static>``.
- Outcomes are read from the responses, so the services need no hooks: the token endpoint (issued, or
  the OAuth error), bearer tokens presented to the API (accepted, rejected, insufficient_scope), handoff
  requests (issued, or the problem code) and acknowledgements (accepted, rejected, or the problem code).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from . import metrics, views

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")  # problem and OAuth error codes are snake_case constants
MAX_BODY = 64 * 1024  # outcome codes are read from small JSON bodies only
PROBES = {"/healthz": views.healthz, "/readyz": views.readyz}
UNMATCHED, STATIC = "<unmatched>", "<static>"


def _route(request: HttpRequest) -> tuple[str, str | None]:
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.route or match.view_name or UNMATCHED, match.url_name
    static = "/" + settings.STATIC_URL.lstrip("/")
    return (STATIC if request.path_info.startswith(static) else UNMATCHED), None


def _body(response: HttpResponse) -> dict:
    if getattr(response, "streaming", False) or len(getattr(response, "content", b"")) > MAX_BODY:
        return {}
    try:
        body = json.loads(response.content or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _code(value: object) -> str:
    return value if isinstance(value, str) and CODE.match(value) else "other"


def _outcomes(request: HttpRequest, response: HttpResponse, url_name: str | None) -> None:
    status = response.status_code
    if url_name == "oauth-token" and request.method == "POST":
        if status in (200, 429):
            outcome = "issued" if status == 200 else "rate_limited"
        else:
            outcome = _code(_body(response).get("error"))
        metrics.OAUTH_TOKENS.labels(outcome).inc()
        return
    if request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer ":
        # DRF copies what it authenticated onto the Django request (``request.auth``: the token); routes
        # that never look at the token (public ones) count nothing.
        if status == 401:
            metrics.ACCESS_TOKENS.labels("rejected").inc()
        elif getattr(request, "auth", None):
            scope_refused = status == 403 and "insufficient_scope" in response.get("WWW-Authenticate", "")
            metrics.ACCESS_TOKENS.labels("insufficient_scope" if scope_refused else "accepted").inc()
    if request.method != "POST":
        return
    if url_name == "handoffs":
        outcome = "issued" if status == 201 else _code(_body(response).get("code"))
        metrics.HANDOFF_REQUESTS.labels(outcome).inc()
    elif url_name == "handoff-ack":
        body = _body(response)
        outcome = _code(body.get("status")) if status == 200 else _code(body.get("code"))
        metrics.HANDOFF_ACKS.labels(outcome).inc()


# Each (route, method, status class) child, looked up once: prometheus-client's ``labels()`` costs more
# than the increment. Bounded like the labels themselves.
_children: dict[tuple[str, str, int], tuple] = {}


def observe(request: HttpRequest, response: HttpResponse, seconds: float, route: str | None = None) -> None:
    url_name = None
    if route is None:
        route, url_name = _route(request)
    method = request.method if request.method in METHODS else "other"
    key = (route, method, response.status_code // 100)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (metrics.HTTP_REQUESTS.labels(route, method, f"{key[2]}xx"),
                                     metrics.HTTP_DURATION.labels(route, method))
    children[0].inc()
    children[1].observe(seconds)
    _outcomes(request, response, url_name)


class MonitoringMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        probe = PROBES.get(request.path_info) if request.method in ("GET", "HEAD") else None
        if probe is not None:
            response = probe(request)
            observe(request, response, time.perf_counter() - started, route=request.path_info.lstrip("/"))
            return response
        response = self.get_response(request)
        observe(request, response, time.perf_counter() - started)
        return response
