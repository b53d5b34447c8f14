"""Human pages of the registry."""

from __future__ import annotations

from django.shortcuts import redirect, render
from rest_framework.request import Request

from core.throttling import ResolveRateThrottle

from registry import selectors
from registry.models import Resource


def resolve_page(request, ucri: str):
    """``GET /r/{ucri}``: the resolve record as a page (same selector and rate limit as the API)."""
    throttle = ResolveRateThrottle()
    if not throttle.allow_request(Request(request), None):
        wait = max(1, int((throttle.wait() or 1) + 0.999))
        response = render(request, "registry/rate_limited.html", {"wait": wait}, status=429)
        response["Retry-After"] = str(wait)
        return response
    resolution = selectors.resolve(ucri)
    record = resolution.body if resolution.is_record else resolution.body.get("record")
    problem = None if resolution.is_record else resolution.body
    return render(request, "registry/record.html",
                  {"query": ucri, "record": record, "problem": problem}, status=resolution.status)


def home(request):
    query = request.GET.get("q", "").strip()
    if query:
        return redirect("resolve-page", ucri=query)
    samples = list(Resource.objects.filter(status=Resource.Status.ACTIVE)
                   .order_by("ucri").values_list("ucri", flat=True)[:10])
    return render(request, "registry/home.html", {"node": selectors.self_node(), "samples": samples})
