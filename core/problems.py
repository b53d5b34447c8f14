"""RFC 9457 problem details: one renderer for every API error (CONTRACT §2)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

from .errors import ApplicationError

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://cir.example/problems/"


def problem_body(status: int, code: str, detail: str, title: str | None = None, **extra: Any) -> dict:
    body = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return body


def problem_response(status: int, code: str, detail: str, *, title: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> HttpResponse:
    """A plain Django response (for views outside DRF and for handler404/500)."""
    from .http import json_bytes

    response = HttpResponse(
        json_bytes(problem_body(status, code, detail, title, **extra)),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def error_response(error: ApplicationError) -> HttpResponse:
    return problem_response(error.status, error.code, error.detail, title=error.title,
                            headers=error.headers, **error.extra)


_DRF_CODES = {
    drf_exceptions.NotAuthenticated: "invalid_token",
    drf_exceptions.AuthenticationFailed: "invalid_token",
    drf_exceptions.PermissionDenied: "insufficient_scope",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "rate_limited",
    drf_exceptions.ParseError: "malformed_body",
    drf_exceptions.ValidationError: "invalid_request",
}


def _drf_code(exc: drf_exceptions.APIException) -> str:
    for cls in type(exc).__mro__:
        if cls in _DRF_CODES:
            return _DRF_CODES[cls]
    return "error"


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF exception handler: every error leaves as application/problem+json with a stable code."""
    if isinstance(exc, ApplicationError):
        response = Response(
            problem_body(exc.status, exc.code, exc.detail, exc.title, **exc.extra),
            status=exc.status, headers=exc.headers, content_type=PROBLEM_CONTENT_TYPE,
        )
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(problem_body(413, "payload_too_large", "The request body is too large."), status=413,
                        content_type=PROBLEM_CONTENT_TYPE)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if not isinstance(exc, drf_exceptions.APIException):
        return None
    code = _drf_code(exc)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        detail = "The request is invalid."
        extra["errors"] = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
    else:
        detail = str(exc.detail)
    if isinstance(exc, drf_exceptions.NotAuthenticated):
        exc.status_code = 401
        headers["WWW-Authenticate"] = 'Bearer realm="cir"'
    elif isinstance(exc, drf_exceptions.AuthenticationFailed):
        exc.status_code = 401
        headers["WWW-Authenticate"] = 'Bearer realm="cir", error="invalid_token"'
    elif isinstance(exc, drf_exceptions.PermissionDenied):
        headers["WWW-Authenticate"] = 'Bearer realm="cir", error="insufficient_scope"'
    if isinstance(exc, drf_exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    return Response(
        problem_body(exc.status_code, code, detail, **extra),
        status=exc.status_code, headers=headers, content_type=PROBLEM_CONTENT_TYPE,
    )


def api_not_found(request, exception=None) -> HttpResponse:
    """handler404: API clients get problem details, people get the HTML page."""
    if request.path.startswith("/api/"):
        return problem_response(404, "not_found", "No such endpoint.")
    if request.path.startswith("/federation/"):
        return JsonResponse({"error": "not_found", "error_description": "no such federation endpoint"}, status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def api_bad_request(request, exception=None) -> HttpResponse:
    """handler400 (e.g. a body over DATA_UPLOAD_MAX_MEMORY_SIZE): problem details on API routes."""
    if request.path.startswith("/api/"):
        return problem_response(400, "malformed_body", "The request could not be read (too large or malformed).")
    from django.views.defaults import bad_request

    return bad_request(request, exception)


def api_server_error(request) -> HttpResponse:
    if request.path.startswith("/api/"):
        return problem_response(500, "server_error", "The server failed to handle this request.")
    from django.views.defaults import server_error

    return server_error(request)
