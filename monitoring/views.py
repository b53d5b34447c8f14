"""``/healthz``, ``/readyz`` and ``/metrics`` (CONTRACT §12)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from . import access, health, metrics


@require_safe
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """200 while the process runs: nothing else is checked (see ``health``)."""
    return JsonResponse({"status": "ok"})


@require_safe
@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """200 when every check passes, else 503 naming the failing parts; the body lists every check.
    ``?exclude=<check>`` (repeatable) leaves checks out, e.g. ``exclude=trust_chain`` for a load
    balancer that should keep serving the local catalog while federation is repaired."""
    exclude = [name for name in request.GET.getlist("exclude") if name in health.CHECKS]
    report = health.readiness(exclude=exclude)
    response = JsonResponse(report.as_dict(), status=200 if report.ready else 503)
    # The failing parts are logged once per probe as warnings (``health``); without this Django would add
    # an ERROR "Service Unavailable" line for every probe of an instance that is not ready.
    response._has_been_logged = True
    return response


class MetricsView(APIView):
    """``GET /metrics``: the Prometheus text format (OpenMetrics when asked for), for an address in
    ``CIR_METRICS_ALLOW`` or a bearer token with ``metrics:read``."""

    schema = None  # an operations endpoint, not part of the API's OpenAPI document
    permission_classes = [access.MetricsAccess]
    required_scopes = access.SCOPE

    def perform_content_negotiation(self, request, force=False):
        # Scrapers ask for text/plain or OpenMetrics; errors are problem details (JSON) whatever they accept.
        return JSONRenderer(), JSONRenderer.media_type

    def get(self, request) -> HttpResponse:
        body, content_type = metrics.render(request.headers.get("Accept", ""))
        response = HttpResponse(body, content_type=content_type)
        response["Cache-Control"] = "no-store"
        return response
