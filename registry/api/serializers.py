"""Input serializers of the provider write API (CONTRACT §9): they type and bound the JSON; the
services validate the rest. Unknown members are 400, not silently dropped."""

from __future__ import annotations

import math
import re

from rest_framework import serializers

from ..models import Downtime, Resource
from ..validators import ENDPOINT_TYPES


class StrictSerializer(serializers.Serializer):
    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


def _is_number(data) -> bool:
    return isinstance(data, int | float) and not isinstance(data, bool)


class FiniteFloatField(serializers.FloatField):
    """A JSON number (not a string, not a boolean); NaN and infinities are refused."""

    def to_internal_value(self, data):
        if not _is_number(data) or not math.isfinite(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, booleans or floats."""

    def to_internal_value(self, data):
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictDecimalField(serializers.DecimalField):
    """A price as a JSON number, kept exactly as written (its shortest decimal form)."""

    def to_internal_value(self, data):
        if not _is_number(data) or not math.isfinite(data):
            self.fail("invalid")
        return super().to_internal_value(repr(data) if isinstance(data, float) else data)


class StrictCharField(serializers.CharField):
    """A JSON string: numbers are not silently turned into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


class StrictDateTimeField(serializers.DateTimeField):
    """RFC 3339 with an explicit offset (or Z), within a sane range."""

    def to_internal_value(self, value):
        if not isinstance(value, str) or not RFC3339.match(value):
            self.fail("invalid", format="RFC 3339 with an offset, e.g. 2026-11-24T08:00:00Z")
        parsed = super().to_internal_value(value)
        if not 2000 <= parsed.year <= 2200:
            self.fail("invalid", format="a time between the years 2000 and 2200")
        return parsed


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})\Z")
MAX_ENDPOINTS = 32


def _figure(**kwargs) -> FiniteFloatField:
    return FiniteFloatField(required=False, allow_null=True, min_value=0, **kwargs)


class EndpointSerializer(StrictSerializer):
    type = StrictChoiceField(choices=ENDPOINT_TYPES)
    url = serializers.URLField(max_length=2000)


class ResourceInputSerializer(StrictSerializer):
    local_id = StrictCharField(max_length=128)
    name = StrictCharField(max_length=200)
    kind = StrictChoiceField(choices=Resource.Kind.choices)
    site_id = serializers.UUIDField()
    accelerator = StrictChoiceField(choices=Resource.Accelerator.choices)
    accelerator_model = StrictCharField(max_length=120)
    accelerator_count = StrictIntegerField(min_value=1, max_value=2**31 - 1)
    node_count = StrictIntegerField(min_value=1, max_value=2**31 - 1, required=False, allow_null=True)
    status = StrictChoiceField(choices=[Resource.Status.ACTIVE, Resource.Status.SUSPENDED], required=False)
    fp64_tflops = _figure()
    fp32_tflops = _figure()
    fp16_tflops = _figure()
    int8_tops = _figure()
    memory_gb = _figure()
    storage_tb = _figure()
    price_per_hour = StrictDecimalField(max_digits=14, decimal_places=4, min_value=0, coerce_to_string=False)
    price_unit = StrictChoiceField(choices=Resource.PriceUnit.choices)
    price_per_million_tokens = StrictDecimalField(max_digits=14, decimal_places=4, min_value=0, required=False,
                                                  allow_null=True, coerce_to_string=False)
    endpoints = EndpointSerializer(many=True, max_length=MAX_ENDPOINTS)

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if "site_id" in values:
            values["site_id"] = str(values["site_id"])
        if "endpoints" in values:
            values["endpoints"] = [dict(e) for e in values["endpoints"]]
        return values


class SiteInputSerializer(StrictSerializer):
    name = StrictCharField(max_length=200)
    province = StrictCharField(max_length=2)
    hub = StrictCharField(max_length=8, required=False, allow_null=True, allow_blank=True)
    pue = FiniteFloatField(min_value=1)
    wue = FiniteFloatField(min_value=0, required=False, allow_null=True)
    cue = FiniteFloatField(min_value=0, required=False, allow_null=True)
    green_ratio = FiniteFloatField(min_value=0, max_value=1)
    rack_availability = FiniteFloatField(min_value=0, max_value=1)


class DowntimeInputSerializer(StrictSerializer):
    resource = StrictCharField(max_length=120, required=False)
    site_id = serializers.UUIDField(required=False)
    start = StrictDateTimeField()
    end = StrictDateTimeField()
    classification = StrictChoiceField(choices=Downtime.Classification.choices)
    reason = StrictCharField(max_length=500, required=False, allow_blank=True)

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if "site_id" in values:
            values["site_id"] = str(values["site_id"])
        return values
