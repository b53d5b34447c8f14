"""The operators' federation status page: peers, trust chains, feed lag, last sync and violations."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from registry.pages.context import can_watch_federation

from .overview import federation_overview

TEMPLATE = "federation/status.html"


def federation_status_page(request: HttpRequest) -> HttpResponse:
    """``GET /federation-status``: operators only; built from local state, never by calling peers."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not can_watch_federation(request.user):
        return render(request, TEMPLATE, {"denied": True}, status=403)
    return render(request, TEMPLATE, {"overview": federation_overview()})
