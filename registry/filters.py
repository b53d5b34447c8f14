"""The one FilterSet for resources: the discovery API and the catalog pages both use it (CONTRACT §4)."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping

import django_filters
from django import forms
from django.db.models import F, QuerySet
from django.http import QueryDict
from django.utils import timezone, translation

from core.errors import ApplicationError
from core.pagination import Key, Ordering

from . import error_codes, identifiers, reference, selectors
from .models import Resource, Source

_TIE = Key("ucri")
ORDERINGS: dict[str, Ordering] = {
    "ucri": Ordering("ucri", (_TIE,)),
    "price": Ordering("price", (Key("price_per_hour"), _TIE)),
    "-fp16_tflops": Ordering("-fp16_tflops", (Key("fp16_tflops", descending=True, nullable=True), _TIE)),
    "pue": Ordering("pue", (Key("pue"), _TIE)),
    "-green_ratio": Ordering("-green_ratio", (Key("green_ratio", descending=True), _TIE)),
    "updated_at": Ordering("updated_at", (Key("updated_at"), _TIE)),
    "-available_units": Ordering("-available_units", (
        Key("available_units_now", descending=True, nullable=True, parse=int), _TIE)),
}
PAGINATION_PARAMETERS = frozenset({"cursor", "limit"})


ASCII_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")


class AsciiDecimalField(forms.DecimalField):
    """Plain ASCII decimal numbers only: no other scripts' digits, no underscores, no signs."""

    def to_python(self, value):
        if value not in self.empty_values and not ASCII_NUMBER.match(str(value)):
            raise forms.ValidationError("a plain decimal number such as 12.5 is expected", code="invalid")
        return super().to_python(value)


class AsciiNumberFilter(django_filters.NumberFilter):
    field_class = AsciiDecimalField


class AsciiWholeNumberField(forms.IntegerField):
    """A count: ASCII digits only (``1.5`` units would silently become 1 otherwise)."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        if not (text.isascii() and text.isdigit()):
            raise forms.ValidationError("a whole number such as 4 is expected", code="invalid")
        return int(text)


class AsciiWholeNumberFilter(django_filters.NumberFilter):
    field_class = AsciiWholeNumberField


class PrefixField(forms.CharField):
    def to_python(self, value):
        value = super().to_python(value)
        if not value:
            return value
        try:
            return identifiers.normalize_prefix(value)
        except identifiers.UCRIError as exc:
            raise forms.ValidationError(str(exc)) from exc


class PrefixFilter(django_filters.CharFilter):
    field_class = PrefixField


class ResourceFilterSet(django_filters.FilterSet):
    kind = django_filters.ChoiceFilter(choices=Resource.Kind.choices)
    accelerator = django_filters.ChoiceFilter(choices=Resource.Accelerator.choices)
    min_fp64_tflops = AsciiNumberFilter(field_name="fp64_tflops", lookup_expr="gte", min_value=0)
    min_fp16_tflops = AsciiNumberFilter(field_name="fp16_tflops", lookup_expr="gte", min_value=0)
    min_memory_gb = AsciiNumberFilter(field_name="memory_gb", lookup_expr="gte", min_value=0)
    hub = django_filters.ChoiceFilter(choices=lambda: [(h, h) for h in reference.hubs()])
    province = django_filters.ChoiceFilter(choices=lambda: [(p, p) for p in reference.provinces()])
    provider = PrefixFilter(field_name="provider__prefix")
    prefix = PrefixFilter(method="filter_prefix")
    status = django_filters.ChoiceFilter(choices=Resource.Status.choices)
    max_price = AsciiNumberFilter(field_name="price_per_hour", lookup_expr="lte", min_value=0)
    price_unit = django_filters.ChoiceFilter(choices=Resource.PriceUnit.choices)
    max_pue = AsciiNumberFilter(field_name="pue", lookup_expr="lte", min_value=0)
    min_green_ratio = AsciiNumberFilter(field_name="green_ratio", lookup_expr="gte", min_value=0, max_value=1)
    source = django_filters.ChoiceFilter(choices=Source.choices)
    min_available_units = AsciiWholeNumberFilter(field_name="availability__available_units", lookup_expr="gte",
                                                 min_value=0, max_value=2**31 - 1)
    fresh_only = django_filters.ChoiceFilter(choices=[("true", "true"), ("false", "false")], method="filter_fresh")
    include_downtime = django_filters.ChoiceFilter(choices=[("true", "true"), ("false", "false")],
                                                   method="filter_noop")
    order = django_filters.ChoiceFilter(choices=[(name, name) for name in ORDERINGS], method="filter_noop")

    class Meta:
        model = Resource
        fields: list[str] = []

    _form_classes: dict[tuple[str, tuple[str, ...]], type] = {}

    def __init__(self, data=None, queryset=None, *, request=None, prefix=None):
        # As django-filter's, which deep-copies every filter with its choices for each FilterSet: a
        # shallow copy per filter is enough for each FilterSet to own its filters (their options are only
        # read), with method filters re-bound to their copy.
        if queryset is None:
            queryset = self._meta.model._default_manager.all()
        self.is_bound = data is not None
        self.data = data or QueryDict()
        self.queryset = queryset
        self.request = request
        self.form_prefix = prefix
        self.filters = {}
        for name, base in self.base_filters.items():
            filter_ = copy.copy(base)
            if base.method is not None:
                filter_.method = base.method  # a FilterMethod bound to this copy
            filter_.model = queryset.model
            filter_.parent = self
            self.filters[name] = filter_

    def get_form_class(self):
        # django-filter builds a new form class (a form field per filter, labels included) for every
        # FilterSet. The filters are fixed, and a filter given no value filters nothing and cannot fail,
        # so the form holds only the filters given, built once per set of names and language (labels are
        # translated).
        names = tuple(name for name in self.filters if name in self.data) if self.is_bound else tuple(self.filters)
        key = (translation.get_language() or "", names)
        form_class = self._form_classes.get(key)
        if form_class is None:
            fields = {name: self.filters[name].field for name in names}
            form_class = type(f"{type(self).__name__}Form", (self._meta.form,), fields)
            if len(self._form_classes) < 1024:
                self._form_classes[key] = form_class
        return form_class

    def filter_prefix(self, queryset: QuerySet[Resource], name: str, value: str) -> QuerySet[Resource]:
        return selectors.under_prefix(queryset, value) if value else queryset

    def filter_fresh(self, queryset: QuerySet[Resource], name: str, value: str) -> QuerySet[Resource]:
        if value != "true":
            return queryset
        return queryset.filter(availability__expires_at__gt=timezone.now())

    def filter_noop(self, queryset, name, value):
        # ``include_downtime`` and ``order`` shape the base queryset and the pagination, not a WHERE.
        return queryset


FILTER_PARAMETERS = frozenset(ResourceFilterSet.base_filters)
DISCOVERY_PARAMETERS = FILTER_PARAMETERS | PAGINATION_PARAMETERS


def _single_values(params: Mapping, allowed: frozenset[str]) -> dict[str, str]:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ApplicationError(error_codes.UNKNOWN_PARAMETER, f"unknown query parameter(s): {', '.join(unknown)}",
                               status=400, extra={"parameters": unknown})
    values: dict[str, str] = {}
    for name in params:
        given = params.getlist(name) if hasattr(params, "getlist") else [params[name]]
        if len(given) != 1 or not str(given[0]).strip():
            raise ApplicationError(error_codes.INVALID_FILTER, f"{name} takes exactly one non-empty value",
                                   status=400, extra={"parameter": name})
        values[name] = str(given[0]).strip()
    return values


def discover(params: Mapping) -> tuple[QuerySet[Resource], Ordering, dict[str, str]]:
    """Validate discovery parameters and build the filtered queryset and its order.

    Defaults (CONTRACT §4): ``status=active``, resources in an ongoing downtime left out, order by ucri.
    """
    values = _single_values(params, DISCOVERY_PARAMETERS)
    filter_values = {k: v for k, v in values.items() if k in FILTER_PARAMETERS}
    filter_values.setdefault("status", Resource.Status.ACTIVE)
    filterset = ResourceFilterSet(filter_values, queryset=Resource.objects.none())
    if not filterset.is_valid():
        errors = {field: [str(m) for m in messages] for field, messages in filterset.errors.items()}
        raise ApplicationError(error_codes.INVALID_FILTER, "invalid filter value(s): " + ", ".join(sorted(errors)),
                               status=400, extra={"errors": errors})
    cleaned = filterset.form.cleaned_data
    order_name = cleaned.get("order") or "ucri"
    if (order_name == "price" or cleaned.get("max_price") is not None) and not cleaned.get("price_unit"):
        raise ApplicationError(error_codes.PRICE_UNIT_REQUIRED,
                               "prices compare only within one price_unit: add price_unit=card|core|node",
                               status=400)
    base = selectors.discovery_queryset(include_downtime=cleaned.get("include_downtime") == "true")
    if order_name == "-available_units":
        base = base.annotate(available_units_now=F("availability__available_units"))
    queryset = filterset.filter_queryset(base)
    return queryset, ORDERINGS[order_name], values
