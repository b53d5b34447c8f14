"""The catalog explorer: what discovery (CONTRACT §4) shows, as a page for operators and provider staff.

It is the API with a form in front: the same parameter validation and FilterSet (``filters.discover``),
the same keyset pagination and the same availability object on each item, so a filter narrows the page
exactly as it narrows ``GET /api/v1/resources``. The CSV export walks every page of the same result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, pgettext_lazy
from django.views.decorators.cache import never_cache

from core.errors import ApplicationError
from core.pagination import paginate, parse_limit

from .. import availability, error_codes, exports, filters, reference, selectors
from ..models import Resource, Source
from . import labels
from .context import can_explore
from .labels import STATUS_LABELS

TEMPLATE = "registry/explorer.html"
# Shown above the validator's own (English, technical) message, so the reader knows what to fix.
PROBLEM_TITLES = {
    error_codes.UNKNOWN_PARAMETER: _("The address carries a parameter the explorer does not know."),
    error_codes.INVALID_FILTER: _("A filter value is not valid."),
    error_codes.PRICE_UNIT_REQUIRED: _("Prices compare only within one price unit: choose a price unit."),
}
KIND_LABELS = {Resource.Kind.GENERAL: _("General-purpose"), Resource.Kind.INTELLIGENT: _("Intelligent computing"),
               Resource.Kind.SUPER: _("Supercomputing")}
ORDER_LABELS = {
    "ucri": _("UCRI"), "price": _("Price, lowest first"), "-fp16_tflops": _("FP16, highest first"),
    "pue": _("PUE, lowest first"), "-green_ratio": _("Green-power share, highest first"),
    "updated_at": _("Least recently updated first"), "-available_units": _("Available now, most first"),
}
UNIT_LABELS = {Resource.PriceUnit.CARD: _("card"), Resource.PriceUnit.CORE: _("core"),
               Resource.PriceUnit.NODE: _("node")}
SOURCE_LABELS = {Source.LOCAL: _("This node"), Source.MIRROR: _("Mirrored")}
YES = pgettext_lazy("filter choice", "Yes")


def units_free(unit: str, count: int) -> str:
    """"12 cards free": availability counts in the resource's price unit (CONTRACT §13)."""
    if unit == Resource.PriceUnit.NODE:
        text = ngettext("%(count)d node free", "%(count)d nodes free", count)
    elif unit == Resource.PriceUnit.CORE:
        text = ngettext("%(count)d core free", "%(count)d cores free", count)
    else:
        text = ngettext("%(count)d card free", "%(count)d cards free", count)
    return text % {"count": count}


@dataclass
class Field:
    """One control of the filter form; ``name`` is the discovery API's parameter name."""

    name: str
    label: Any
    widget: str  # select | number | text
    options: list[tuple[str, Any]] = field(default_factory=list)
    value: str = ""
    step: str = "any"
    minimum: str | None = "0"
    maximum: str | None = None
    blank: Any = ""


def given_parameters(query: Mapping) -> QueryDict:
    """The query without blank values: an empty form field means "no filter", not an invalid one.

    Repeated non-blank values are kept, so ``discover`` still refuses them as the API does."""
    kept = QueryDict(mutable=True)
    lists = query.lists() if hasattr(query, "lists") else ((k, [v]) for k, v in query.items())
    for name, values in lists:
        values = [v for v in values if str(v).strip()]
        if values:
            kept.setlist(name, values)
    return kept


def hub_name(code: str | None) -> str:
    hub = reference.hubs().get(code or "")
    return hub.name(labels.is_chinese()) if hub else ""


def province_name(code: str) -> str:
    province = reference.provinces().get(code)
    return province.name(labels.is_chinese()) if province else code


def filter_fields(values: Mapping[str, str]) -> list[Field]:
    chinese = labels.is_chinese()
    hubs = [(h.code, f"{h.name(chinese)} ({h.code})") for h in reference.hubs().values()]
    provinces = [(p.code, f"{p.name(chinese)} ({p.code})")
                 for p in sorted(reference.provinces().values(), key=lambda p: p.code)]
    fields = [
        Field("kind", _("Kind"), "select", list(KIND_LABELS.items()), blank=_("Any kind")),
        Field("accelerator", _("Accelerator"), "select", [(a, a) for a in Resource.Accelerator.values],
              blank=_("Any accelerator")),
        Field("hub", _("National hub"), "select", hubs, blank=_("Any hub")),
        Field("province", _("Province"), "select", provinces, blank=_("Any province")),
        Field("min_fp16_tflops", _("Minimum FP16 TFLOPS"), "number"),
        Field("min_fp64_tflops", _("Minimum FP64 TFLOPS"), "number"),
        Field("min_memory_gb", _("Minimum memory (GB)"), "number"),
        Field("min_available_units", _("Minimum units available now"), "number", step="1"),
        Field("price_unit", _("Price unit"), "select", list(UNIT_LABELS.items()), blank=_("Any unit")),
        Field("max_price", _("Maximum price (yuan per unit-hour)"), "number"),
        Field("max_pue", _("Maximum PUE"), "number", minimum="1"),
        Field("min_green_ratio", _("Minimum green-power share (0 to 1)"), "number", step="0.01", maximum="1"),
        Field("fresh_only", _("Only fresh availability"), "select", [("true", YES)], blank=_("No")),
        Field("include_downtime", _("Include resources in downtime"), "select", [("true", YES)], blank=_("No")),
        Field("status", _("Status"), "select", list(STATUS_LABELS.items()), blank=_("Active (default)")),
        Field("source", _("Source"), "select", list(SOURCE_LABELS.items()), blank=_("Local and mirrored")),
        Field("provider", _("Provider prefix"), "text", minimum=None),
        Field("prefix", _("Under prefix"), "text", minimum=None),
        Field("order", _("Order"), "select", [(k, ORDER_LABELS.get(k, k)) for k in filters.ORDERINGS if k != "ucri"],
              blank=ORDER_LABELS["ucri"]),
        Field("limit", _("Rows per page"), "select", [(n, n) for n in ("25", "100", "200", "500")], blank="50"),
    ]
    for item in fields:
        item.value = values.get(item.name, "")
        if item.name == "limit" and item.value and item.value not in {v for v, _ in item.options}:
            item.options.append((item.value, item.value))  # a limit typed into the address stays selected
    return fields


def _gate(request: HttpRequest) -> HttpResponse | None:
    """Sign-in first (the admin's login page), then the role: operators and provider staff only."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if not can_explore(request.user):
        return render(request, TEMPLATE, {"denied": True}, status=403)
    return None


def _query(params: Mapping[str, str], *, without: frozenset[str] = frozenset()) -> str:
    query = QueryDict(mutable=True)
    for name, value in params.items():
        if name not in without:
            query[name] = value
    return query.urlencode()


def _rows(resources: list[Resource]) -> list[dict[str, Any]]:
    """Each resource as the API item (the §3 record plus availability), with display names."""
    held = availability.for_resources(resources)
    now = timezone.now()
    rows = []
    for resource, record in zip(resources, selectors.records_for(resources), strict=True):
        shown = availability.public(held.get(resource.pk), now)
        rows.append({
            "record": record,
            "availability": shown,
            "free": units_free(resource.price_unit, shown["available_units"]) if shown else "",
            "kind_label": KIND_LABELS.get(resource.kind, resource.kind),
            "status_label": STATUS_LABELS.get(resource.status, resource.status),
            "unit_label": UNIT_LABELS.get(resource.price_unit, resource.price_unit),
            "hub_name": hub_name(resource.hub),
            "province_name": province_name(resource.province),
        })
    return rows


def _problem_response(request: HttpRequest, exc: ApplicationError, params: Mapping[str, str]) -> HttpResponse:
    errors = exc.extra.get("errors") if isinstance(exc.extra.get("errors"), dict) else {}
    context = {"fields": filter_fields(params), "problem": {
        "code": exc.code, "title": PROBLEM_TITLES.get(exc.code, _("The request is not valid.")),
        "detail": exc.detail, "errors": sorted(errors.items())}}
    return render(request, TEMPLATE, context, status=exc.status)


@never_cache  # signed-in pages: no shared cache may keep them
def explorer_page(request: HttpRequest) -> HttpResponse:
    """``GET /explorer``: one page of discovery results with the filter form."""
    refused = _gate(request)
    if refused is not None:
        return refused
    given = given_parameters(request.GET)
    shown = {name: given.get(name) for name in given}
    try:
        queryset, ordering, values = filters.discover(given)
        page = paginate(queryset, ordering, cursor=values.get("cursor"), limit=parse_limit(values.get("limit")))
    except ApplicationError as exc:
        return _problem_response(request, exc, shown)
    filters_only = frozenset({"cursor"})
    context = {
        "fields": filter_fields(values),
        "rows": _rows(page.items),
        "next_query": _query({**values, "cursor": page.next_cursor}) if page.next_cursor else None,
        "first_query": _query(values, without=filters_only) if values.get("cursor") else None,
        "api_query": _query(values),
        "csv_query": _query(values, without=filters.PAGINATION_PARAMETERS),
    }
    return render(request, TEMPLATE, context)


def explorer_csv(request: HttpRequest) -> HttpResponse:
    """``GET /explorer/export.csv``: every resource of the current filters (all pages), streamed.

    A ``cursor`` starts the export at that page; ``limit`` is validated but the export is never cut."""
    refused = _gate(request)
    if refused is not None:
        return refused
    given = given_parameters(request.GET)
    try:
        queryset, ordering, values = filters.discover(given)
        parse_limit(values.get("limit"))
        if values.get("cursor"):
            # Check the cursor now: once streaming has begun, a 400 can no longer be sent.
            paginate(queryset, ordering, cursor=values["cursor"], limit=1)
    except ApplicationError as exc:
        return _problem_response(request, exc, {name: given.get(name) for name in given})
    chunks = exports.resource_chunks(queryset, ordering, cursor=values.get("cursor"))
    response = StreamingHttpResponse(exports.stream(chunks), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="cir-resources-{stamp}.csv"'
    response["Cache-Control"] = "private, no-store"
    return response
