"""The operators' federation status page: peers, trust chains, feed lag, last sync and violations."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache

from registry.pages.context import can_watch_federation

from .overview import federation_overview

TEMPLATE = "federation/status.html"
ROLE_LABELS = {"national": _("National"), "ministerial": _("Ministerial"), "provincial": _("Provincial"),
               "industry": _("Industry")}


@never_cache
def federation_status_page(request: HttpRequest) -> HttpResponse:
    """``GET /federation-status``: operators only; built from local state, never by calling peers."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not can_watch_federation(request.user):
        return render(request, TEMPLATE, {"denied": True}, status=403)
    overview = federation_overview()
    role = overview.node.role if overview.node is not None else ""
    return render(request, TEMPLATE, {"overview": overview, "role_label": ROLE_LABELS.get(role, role)})
