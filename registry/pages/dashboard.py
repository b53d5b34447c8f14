"""The public national compute dashboard (``/dashboard``).

The figures come from ``registry.indicators`` (SQL aggregates, cached as data); this module only turns
them into rows for the template: names in the current language, ranks, bar lengths and percentages.
Definitions of every figure: docs/dashboard.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _

from registry import indicators, reference
from registry.indicators import PUE_EDGES, RATIO_EDGES, Indicators, Price, Scale
from registry.pages import labels

KIND_LABELS = {"general": _("General compute"), "intelligent": _("Intelligent compute"),
               "super": _("Supercomputing")}
PRECISION_LABELS = {"fp64": "FP64", "fp32": "FP32", "fp16": "FP16"}
UNIT_LABELS = {"card": _("per card-hour"), "core": _("per core-hour"), "node": _("per node-hour")}
UNIT_NAMES = {"card": _("cards"), "core": _("cores"), "node": _("nodes")}
REGION_LABELS = {"east": _("east"), "west": _("west")}
TARGET_LABELS = {
    "compute scale": _("Compute scale (native precision)"),
    "intelligent computing centers": _("Intelligent computing centres"),
    "intelligent compute share": _("Intelligent compute share"),
    "OTN coverage of key application sites": _("OTN coverage of key application sites"),
    "SRv6 and similar technology share": _("SRv6 and similar technology share"),
    "inter-cluster latency compliance of hub data centres": _("Inter-cluster latency compliance of hub data centres"),
    "total storage capacity": _("Total storage capacity"),
    "advanced storage share": _("Advanced storage share"),
}
TFLOPS_PER_PFLOPS = 1e3


def dashboard_page(request: HttpRequest) -> HttpResponse:
    data = indicators.current()
    chinese = labels.is_chinese()
    return render(request, "registry/dashboard.html", build_context(data, chinese=chinese))


# Presentation -------------------------------------------------------------------------------------

def _pct(part: float | None, whole: float | None = 1.0) -> float | None:
    """``part / whole`` as a percentage, or None when there is nothing to divide by."""
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def _bar(value: float, largest: float) -> float:
    """A bar length (0-100) relative to the largest value shown beside it."""
    return round(100.0 * value / largest, 2) if largest > 0 else 0.0


def _hub_name(code: str | None, chinese: bool) -> str:
    if code is None:
        return str(_("Outside the hubs"))
    hub = reference.hubs().get(code)
    return hub.name(chinese) if hub else code


def _province_name(code: str, chinese: bool) -> str:
    province = reference.provinces().get(code)
    return province.name(chinese) if province else code


def _ranked(areas: Iterable[tuple[str | None, str, Scale, dict[str, Any]]]) -> dict[str, Any]:
    """Rows ranked by compute scale (native precision), then by resource count, with bar lengths and one
    display unit for the list (EFLOPS once the largest reaches 1,000 PFLOPS, else PFLOPS)."""
    rows = [{"code": code, "name": name, "resources": scale.resources, "active": scale.active,
             "native_pflops": scale.native_tflops / TFLOPS_PER_PFLOPS, **extra}
            for code, name, scale, extra in areas]
    rows.sort(key=lambda row: (-row["native_pflops"], -row["resources"], row["name"]))
    top_scale = max((row["native_pflops"] for row in rows), default=0.0)
    top_count = max((row["resources"] for row in rows), default=0)
    unit, per_unit = ("EFLOPS", 1e3) if top_scale >= 1e3 else ("PFLOPS", 1.0)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
        row["scale"] = row["native_pflops"] / per_unit
        row["scale_bar"] = _bar(row["native_pflops"], top_scale)
        row["count_bar"] = _bar(row["resources"], top_count)
    return {"rows": rows, "unit": unit}


def _hubs(data: Indicators, chinese: bool) -> dict[str, Any]:
    codes: list[str | None] = list(reference.hubs())
    if None in data.by_hub:
        codes.append(None)
    areas = []
    for code in codes:
        hub = reference.hubs().get(code) if code else None
        areas.append((code, _hub_name(code, chinese), data.by_hub.get(code, Scale()),
                      {"region": REGION_LABELS.get(hub.region, "") if hub else ""}))
    # Hubs a newer reference table knows but this one does not still show, by code.
    areas += [(code, _hub_name(code, chinese), scale, {"region": ""})
              for code, scale in data.by_hub.items() if code is not None and code not in reference.hubs()]
    return _ranked(areas)


def _provinces(data: Indicators, chinese: bool) -> dict[str, Any]:
    def hub(code: str) -> str:
        province = reference.provinces().get(code)
        name = _hub_name(province.hub, chinese) if province else ""
        return "" if name == _province_name(code, chinese) else name  # "Guizhou (Guizhou)" says nothing

    return _ranked((code, _province_name(code, chinese), scale, {"hub": hub(code)})
                   for code, scale in data.by_province.items())


def _kinds(data: Indicators) -> list[dict[str, Any]]:
    return [{"kind": kind, "label": KIND_LABELS.get(kind, kind),
             "precision": PRECISION_LABELS[indicators.NATIVE_PRECISION[kind]],
             "resources": scale.resources, "publishing": scale.native_resources,
             "native_eflops": scale.native_eflops, "share": _pct(scale.native_tflops, data.total.native_tflops)}
            for kind, scale in data.by_kind.items() if kind in indicators.NATIVE_PRECISION]


def _histogram(counts: list[int], labels: list[str], tones: list[str] | None = None) -> list[dict[str, Any]]:
    top = max(counts, default=0)
    total = sum(counts)
    tones = tones or [""] * len(counts)
    return [{"label": label, "count": count, "bar": _bar(count, top), "share": _pct(count, total), "tone": tone}
            for label, count, tone in zip(labels, counts, tones, strict=True)]


def _pue_tones() -> list[str]:
    """Which hub targets a PUE bucket meets: ``both`` (west and east), ``east`` only, or ``neither``."""
    west, east = indicators.PUE_TARGETS["west"], indicators.PUE_TARGETS["east"]
    return ["both" if high <= west else "east" if high <= east else "neither" for high in [*PUE_EDGES, float("inf")]]


def _pue_labels() -> list[str]:
    edges = [f"{edge:.2f}" for edge in PUE_EDGES]
    return [f"≤ {edges[0]}", *(f"{low}–{high}" for low, high in itertools.pairwise(edges)),
            f"> {edges[-1]}"]


def _ratio_labels() -> list[str]:
    edges = [0, *(round(edge * 100) for edge in RATIO_EDGES), 100]
    return [f"{low}–{high}%" for low, high in itertools.pairwise(edges)]


def _rack_tones() -> list[str]:
    """Buckets under the action plan's 50% review line are ``neither`` (reviewed), the rest ``both``."""
    lows = [0.0, *RATIO_EDGES]
    return ["neither" if low < indicators.RACK_REVIEW_BELOW else "both" for low in lows]


def _energy(data: Indicators, chinese: bool) -> dict[str, Any]:
    sites = data.sites
    groups = sorted(sites.by_hub.values(), key=lambda g: _hub_order(g.hub))
    rows = [{"name": _hub_name(g.hub, chinese), "code": g.hub, "sites": g.sites, "target": g.pue_target,
             "median_pue": g.median_pue, "meeting": g.meeting_target, "meeting_share": _pct(g.meeting_share),
             "median_green": _pct(g.median_green_ratio), "median_rack": _pct(g.median_rack_availability),
             "rack_low": g.rack_under_review,
             "rack_low_share": _pct(g.rack_under_review_share)} for g in groups]
    everything = sites.all
    return {
        "rows": rows, "sites": everything.sites, "median_pue": everything.median_pue,
        "median_green": _pct(everything.median_green_ratio),
        "median_rack": _pct(everything.median_rack_availability),
        "in_hubs": sites.in_hubs, "meeting": sites.in_hubs_meeting_target, "meeting_share": _pct(sites.meeting_share),
        "rack_low": everything.rack_under_review, "rack_low_share": _pct(everything.rack_under_review_share),
        "pue_histogram": _histogram(everything.pue_buckets, _pue_labels(), _pue_tones()),
        "green_histogram": _histogram(everything.green_buckets, _ratio_labels()),
        "rack_histogram": _histogram(everything.rack_buckets, _ratio_labels(), _rack_tones()),
        "rack_review_pct": round(indicators.RACK_REVIEW_BELOW * 100),
        "targets": indicators.PUE_TARGETS,
    }


def _hub_order(code: str | None) -> tuple:
    order = list(reference.hubs())
    return (code is None, order.index(code) if code in order else len(order), code or "")


def _live(data: Indicators, chinese: bool) -> dict[str, Any]:
    """One row per hub, one column per price unit (units never add up across cards, cores and nodes)."""
    units = [unit for unit in UNIT_NAMES if any(c.unit == unit for c in data.live)]
    hubs: dict[str | None, dict[str, Any]] = {}
    for cell in data.live:
        row = hubs.setdefault(cell.hub, {"code": cell.hub, "name": _hub_name(cell.hub, chinese), "cells": {},
                                         "active": 0, "fresh": 0})
        row["cells"][cell.unit] = {"static_units": cell.static_units, "fresh_units": cell.fresh_units,
                                   "available_share": _pct(cell.available_share),
                                   "bar": min(100.0, _pct(cell.available_share) or 0.0)}
        row["active"] += cell.active_resources
        row["fresh"] += cell.fresh_resources
    rows = [hubs[code] for code in sorted(hubs, key=_hub_order)]
    for row in rows:
        row["columns"] = [row["cells"].get(unit) for unit in units]
        row["fresh_share"] = _pct(row["fresh"], row["active"])
    return {"rows": rows, "units": [{"unit": unit, "name": UNIT_NAMES[unit]} for unit in units],
            "active": sum(row["active"] for row in rows), "fresh": sum(row["fresh"] for row in rows),
            "fresh_share": _pct(data.fresh_share)}


def _prices(data: Indicators, chinese: bool) -> dict[str, Any]:
    models = list(reference.accelerators())
    by_model = sorted(data.price_by_model, key=lambda p: (
        p.group is None, models.index(p.group) if p.group in models else len(models), p.group or "", p.unit))
    repeated = {p.group for p in by_model if sum(q.group == p.group for q in by_model) > 1}
    model_rows = [{"name": p.group or str(_("Other models")), "group": p.group, "unit": p.unit,
                   "unit_label": UNIT_LABELS.get(p.unit, p.unit), "resources": p.resources,
                   "median_price": p.median_price_per_hour, "token_resources": p.token_resources,
                   "median_tokens": p.median_price_per_million_tokens, "show_unit": p.group in repeated}
                  for p in by_model]
    # By hub: one row per hub, one column per price unit.
    units = [unit for unit in UNIT_LABELS if any(p.unit == unit for p in data.price_by_hub)]
    cells: dict[str | None, dict[str, Price]] = {}
    for price in data.price_by_hub:
        cells.setdefault(price.group, {})[price.unit] = price
    hub_rows = [{"code": code, "name": _hub_name(code, chinese),
                 "columns": [cells[code].get(unit) for unit in units]} for code in sorted(cells, key=_hub_order)]
    return {"by_model": model_rows, "by_hub": hub_rows,
            "hub_units": [{"unit": unit, "label": UNIT_LABELS[unit]} for unit in units],
            "tokens": [row for row in model_rows if row["token_resources"]]}


TARGET_UNITS = {"count": "", "%": "%"}


def _targets(data: Indicators) -> list[dict[str, Any]]:
    rows = []
    for target in data.targets:
        progress = _pct(target.progress)
        rows.append({"key": target.indicator, "label": TARGET_LABELS.get(target.indicator, target.indicator),
                     "unit": TARGET_UNITS.get(target.unit, f" {target.unit}"), "target": target.target_2025,
                     "decimals": 0 if target.unit == "count" else 1 if target.unit == "%" else 2,
                     "covered": target.covered, "measured": target.covered is not None, "progress": progress,
                     "bar": min(100.0, progress or 0.0)})
    return rows


def build_context(data: Indicators, *, chinese: bool) -> dict[str, Any]:
    total = data.total
    return {
        "computed_at": data.computed_at, "cache_seconds": indicators.CACHE_SECONDS,
        "total": total, "fp64_eflops": total.fp64_eflops, "fp16_eflops": total.fp16_eflops,
        "native_eflops": total.native_eflops, "intelligent_share": total.intelligent_share,
        "intelligent_share_pct": _pct(total.intelligent_share),
        "sites_with_resources": data.sites_with_resources, "intelligent_centers": data.intelligent_centers,
        "kinds": _kinds(data), "hubs": _hubs(data, chinese), "provinces": _provinces(data, chinese),
        "energy": _energy(data, chinese), "live": _live(data, chinese), "prices": _prices(data, chinese),
        "targets": _targets(data),
    }
