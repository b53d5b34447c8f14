"""The request id: one id per unit of work (an HTTP request, a Celery task, an operator command), carried
across nodes in ``X-Request-ID`` so one action can be followed through every node's logs.

- ``RequestIdMiddleware`` (first in ``MIDDLEWARE``) takes a well-formed incoming ``X-Request-ID`` (a peer
  node's, or a proxy's) or makes a fresh one, returns it on every response, and logs one access line.
- ``federation.clients`` sends the current id on every call to another node.
- Celery: the id travels in the task's message headers (``on_before_publish``) and is set around the
  task in the worker (``on_prerun``/``on_postrun``); a task queued without one gets a fresh id.
- Operator commands start with a fresh id (``core.commands.OperatorCommand``).
Threads do not inherit it: start them with ``contextvars.copy_context().run``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
CELERY_HEADER = "cir_request_id"
VALID = re.compile(r"[A-Za-z0-9._:-]{8,128}")
PROBES = frozenset({"/healthz", "/readyz"})

_current: ContextVar[str | None] = ContextVar("cir_request_id", default=None)
access_log = logging.getLogger("cir.access")


def current() -> str | None:
    """The id of the work this code runs for, or None outside any."""
    return _current.get()


def new_id() -> str:
    return uuid.uuid4().hex


def accept(value: object) -> str:
    """``value`` when it is a well-formed id, else a fresh one: garbage from outside is never trusted
    (nor logged)."""
    return value if isinstance(value, str) and VALID.fullmatch(value) else new_id()


def ensure() -> str:
    """The current id, setting a fresh one in this context when there is none."""
    value = _current.get()
    if value is None:
        value = new_id()
        _current.set(value)
    return value


def begin() -> str:
    """Start a new unit of work in this context (each pass of a long-running loop): a fresh id."""
    value = new_id()
    _current.set(value)
    return value


@contextmanager
def using(request_id: str | None = None) -> Iterator[str]:
    """Run the block under ``request_id`` (a fresh id when None); the previous id is restored after."""
    value = accept(request_id) if request_id is not None else new_id()
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)


def client_address(request: HttpRequest) -> str:
    """The socket peer, or behind a trusted proxy (``CIR_TRUST_PROXY_HEADER``) the entry it appended to
    ``X-Forwarded-For`` (as the rate limits see it)."""
    proxies = settings.REST_FRAMEWORK.get("NUM_PROXIES") or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        entries = [entry.strip() for entry in forwarded.split(",") if entry.strip()]
        if entries:
            return entries[-min(proxies, len(entries))][:64]
    return request.META.get("REMOTE_ADDR", "")[:64]


def _route(request: HttpRequest) -> str:
    """The matched URL pattern (``api/v1/resolve/<str:ucri>``), or the path without its query when no
    route matched (a 404, a static file)."""
    match = getattr(request, "resolver_match", None)
    if match is not None and (match.route or match.view_name):
        return match.route or match.view_name
    return request.path_info[:200]


class RequestIdMiddleware:
    """First in ``MIDDLEWARE``: every response, errors and probes included, carries ``X-Request-ID``."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accept(request.META.get("HTTP_X_REQUEST_ID"))
        token = _current.set(request_id)
        request.request_id = request_id
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[HEADER] = request_id
            self._log(request, response, time.perf_counter() - started)
            return response
        finally:
            _current.reset(token)

    @staticmethod
    def _log(request: HttpRequest, response: HttpResponse, seconds: float) -> None:
        status = response.status_code
        route = _route(request)
        # Successful probes (every few seconds from an orchestrator) only at DEBUG.
        level = logging.DEBUG if request.path_info in PROBES and status == 200 else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        method = request.method or "-"
        duration_ms = round(seconds * 1000, 1)
        access_log.log(level, "%s %s %s %.1f ms", method, route, status, duration_ms,
                       extra={"method": method, "route": route, "status": status, "duration_ms": duration_ms,
                              "client": client_address(request)})


# Celery signal receivers, connected in config/celery.py.
_task_tokens: dict[str, Token] = {}


def on_before_publish(headers: dict | None = None, **_: Any) -> None:
    """Queued work carries the id of the request, task or command that queued it."""
    if headers is not None and CELERY_HEADER not in headers:
        value = _current.get()
        if value is not None:
            headers[CELERY_HEADER] = value


def _task_header(task: Any) -> str | None:
    request = getattr(task, "request", None)
    value = getattr(request, CELERY_HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(CELERY_HEADER)
    return value


def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """In the worker: the id the task was queued with, else (eager execution) the caller's, else a fresh
    one."""
    value = _task_header(task)
    value = accept(value) if value is not None else (_current.get() or new_id())
    if task_id is not None:
        _task_tokens[task_id] = _current.set(value)


def on_postrun(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        try:
            _current.reset(token)
        except ValueError:  # set in another context (should not happen): leave no id behind
            _current.set(None)
