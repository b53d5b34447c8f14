"""The public resolver pages: the search box on ``/`` and the human record at ``/r/{ucri}``.

The record page renders exactly what ``selectors.resolve`` answers the API (same status codes, same
rate limit), and adds what a person needs around it: the status history, the provider's and its
credential's state, the site's place and green metrics by name, where the record came from, and for
each error a plain explanation with a way onward.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import formats, timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from rest_framework.request import Request

from core.throttling import ResolveRateThrottle
from registry import error_codes, history, identifiers, records, reference, selectors, suggestions
from registry.models import Platform, Provider, Resource, Source
from registry.pages import labels
from registry.pages.labels import STATUS_LABELS

SAMPLE_COUNT = 10

# Labels for the record's enumerations, translated (the record itself keeps the contract's codes).
PROVIDER_STATUS_LABELS = {"active": _("Active"), "suspended": _("Suspended"), "revoked": _("Revoked")}
CREDENTIAL_LABELS = {"valid": _("Valid"), "suspended": _("Suspended"), "revoked": _("Revoked"),
                     "expired": _("Expired")}
KIND_LABELS = {"general": _("General-purpose computing"), "intelligent": _("Intelligent computing"),
               "super": _("Supercomputing")}
PRICE_UNIT_LABELS = {"card": _("yuan per card-hour"), "core": _("yuan per core-hour"),
                     "node": _("yuan per node-hour")}
DOWNTIME_LABELS = {"scheduled": _("Scheduled"), "unscheduled": _("Unscheduled")}
ROLE_LABELS = {"national": _("national"), "ministerial": _("ministerial"), "provincial": _("provincial"),
               "industry": _("industry")}


@dataclass(frozen=True)
class Moment:
    """A time for templates: ``iso`` for ``<time datetime>``, ``value`` for the human rendering."""

    value: dt.datetime
    iso: str


def _moment(value: dt.datetime | str | None) -> Moment | None:
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is None or value.tzinfo is None:
        return None
    return Moment(value, records.timestamp(value))


def _label(labels: dict[str, Any], code: str | None) -> Any:
    return labels.get(code or "", code)


# Views --------------------------------------------------------------------------------------------

def home(request: HttpRequest) -> HttpResponse:
    """``GET /``: the search box. A query in any spelling CONTRACT §1 accepts goes to its canonical
    page; one that does not parse is explained right here (400), with "did you mean" for a typo."""
    query = request.GET.get("q", "").strip()
    if query:
        try:
            canonical = identifiers.canonicalize(query)
        except identifiers.UCRIError:
            return _resolve_or_throttle(request, query)
        return redirect("resolve-page", ucri=canonical)
    samples = list(Resource.objects.filter(status=Resource.Status.ACTIVE)
                   .order_by("ucri").values_list("ucri", "name")[:SAMPLE_COUNT])
    node = selectors.self_node()
    return render(request, "registry/home.html", {
        "node": node, "role_label": _label(ROLE_LABELS, node.role) if node else None,
        "superior": Platform.objects.filter(is_superior=True).first(), "samples": samples,
    })


def resolve_page(request: HttpRequest, ucri: str) -> HttpResponse:
    """``GET /r/{ucri}``: the resolve answer as a page (same selector, status code and rate limit as the API)."""
    return _resolve_or_throttle(request, ucri)


def _resolve_or_throttle(request: HttpRequest, text: str) -> HttpResponse:
    throttle = ResolveRateThrottle()
    if not throttle.allow_request(Request(request), None):
        wait = max(1, int((throttle.wait() or 1) + 0.999))
        response = render(request, "registry/rate_limited.html", {"wait": wait}, status=429)
        response["Retry-After"] = str(wait)
        return response
    resolution = selectors.resolve(text)
    context = resolution_context(text, resolution)
    return render(request, "registry/record.html", context, status=resolution.status)


# Page context -------------------------------------------------------------------------------------

def resolution_context(text: str, resolution: selectors.Resolution) -> dict[str, Any]:
    """Everything the record page shows for one resolve answer."""
    body = resolution.body
    record = body if resolution.is_record else body.get("record")
    return {
        "query": text,
        "status_code": resolution.status,
        "problem": None if resolution.is_record else _problem(text, body),
        "record": _record(record) if record else None,
    }


def _problem(text: str, body: dict[str, Any]) -> dict[str, Any]:
    code = body.get("code")
    problem: dict[str, Any] = {"code": code, "detail": body.get("detail", "")}
    try:
        ucri = identifiers.canonicalize(text)
    except identifiers.UCRIError:
        ucri = None
    problem["ucri"] = ucri
    if code == error_codes.UCRI_CHECKSUM:
        problem["suggestions"] = [
            {"ucri": s.ucri, "name": s.name, "status": s.status, "status_label": _label(STATUS_LABELS, s.status)}
            for s in suggestions.did_you_mean(text)
        ]
    elif code == error_codes.UCRI_REFERRAL:
        problem["next_node"] = body["next_node"]
        problem["next_page"] = f"{body['next_node']}/r/{ucri}"
        problem["location"] = body["location"]
    # ucri_unknown links nowhere else: this node answers "unknown" only inside its own subtree (outside it
    # refers upward), so its superior would only refer the reader back here.
    elif code == error_codes.UCRI_RETIRED:
        record = body.get("record") or {}
        problem["retired_at"] = _moment(record.get("retired_at") or record.get("updated_at"))
    return problem


def _record(record: dict[str, Any]) -> dict[str, Any]:
    provider = Provider.objects.filter(prefix=record["provider"]["prefix"]).first()
    return {
        "ucri": record["ucri"],
        "name": record["name"],
        "status": record["status"],
        "status_label": _label(STATUS_LABELS, record["status"]),
        "version": record["version"],
        "updated_at": _moment(record.get("updated_at")),
        "retired_at": _moment(record.get("retired_at")),
        "local_id": record.get("local_id"),
        "kind_label": _label(KIND_LABELS, record["kind"]),
        "accelerator": record["accelerator"],
        "accelerator_model": record["accelerator_model"],
        "accelerator_count": record["accelerator_count"],
        "node_count": record.get("node_count"),
        "fp64_tflops": _figure(record.get("fp64_tflops")),
        "fp32_tflops": _figure(record.get("fp32_tflops")),
        "fp16_tflops": _figure(record.get("fp16_tflops")),
        "int8_tops": _figure(record.get("int8_tops")),
        "memory_gb": _figure(record.get("memory_gb")),
        "storage_tb": _figure(record.get("storage_tb")),
        "price_per_hour": record["price_per_hour"],
        "price_unit_label": _label(PRICE_UNIT_LABELS, record["price_unit"]),
        "price_per_million_tokens": record.get("price_per_million_tokens"),
        "endpoints": record.get("endpoints") or [],
        "downtimes": _downtimes(record.get("downtimes") or []),
        "provider": _provider(record["provider"], provider),
        "site": _site(record["site"]),
        "source": record["source"],
        "is_mirror": record["source"] == Source.MIRROR,
        "authority": record["authority"],
        "synced_at": _moment(record.get("synced_at")),
        "history": [
            {"version": change.version, "status": change.status,
             "status_label": _label(STATUS_LABELS, change.status),
             "changed_at": _moment(change.changed_at), "recorded_at": _moment(change.recorded_at)}
            for change in history.status_history(record["ucri"])
        ],
        "api_url": f"/api/v1/resolve/{record['ucri']}",
        "provider_api_url": f"/api/v1/providers/{record['provider']['prefix']}",
    }


def _provider(brief: dict[str, Any], provider: Provider | None) -> dict[str, Any]:
    credential_status = brief.get("credential_status")
    return {
        "name": brief["name"],
        "prefix": brief["prefix"],
        "status": provider.status if provider else None,
        "status_label": _label(PROVIDER_STATUS_LABELS, provider.status) if provider else None,
        "credential_status": credential_status,
        "credential_label": _label(CREDENTIAL_LABELS, credential_status) if credential_status else None,
        "credential_expires_at": _moment(provider.credential_expires_at) if provider else None,
    }


def _site(site: dict[str, Any]) -> dict[str, Any]:
    chinese = labels.is_chinese()
    province = reference.provinces().get(site.get("province") or "")
    hub = reference.hubs().get(site.get("hub") or "")
    return {
        "name": site["name"],
        "province": site.get("province"),
        "province_name": province.name(chinese) if province else None,
        "hub": site.get("hub"),
        "hub_name": hub.name(chinese) if hub else None,
        "pue": site.get("pue"),
        "pue_target": reference.pue_target(site.get("hub")),
        "wue": site.get("wue"),
        "cue": site.get("cue"),
        "green_percent": _percent(site.get("green_ratio")),
        "rack_percent": _percent(site.get("rack_availability")),
    }


def _figure(value: float | int | None) -> str | None:
    """A figure in the current language's number format, grouped, without trailing zeros."""
    if value is None:
        return None
    if float(value).is_integer():
        value = int(value)
    return formats.number_format(value, force_grouping=True)


def _percent(ratio: float | None) -> float | None:
    return None if ratio is None else round(ratio * 100, 1)


def _downtimes(downtimes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = timezone.now()
    rows = []
    for downtime in downtimes:
        start, end = _moment(downtime.get("start")), _moment(downtime.get("end"))
        rows.append({
            "classification": downtime.get("classification"),
            "classification_label": _label(DOWNTIME_LABELS, downtime.get("classification")),
            "start": start, "end": end, "reason": downtime.get("reason") or "",
            "of_site": not downtime.get("resource"),
            "ongoing": bool(start and end and start.value <= now < end.value),
        })
    return rows
