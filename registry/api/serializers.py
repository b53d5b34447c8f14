"""Input serializers of the provider write API (CONTRACT §9): they type and bound the JSON; the
services validate the rest. Unknown members are 400, not silently dropped."""

from __future__ import annotations

import math

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


class FiniteFloatField(serializers.FloatField):
    """A JSON number; NaN and infinities ("nan", "inf" strings) are refused."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


def _figure(**kwargs) -> FiniteFloatField:
    return FiniteFloatField(required=False, allow_null=True, min_value=0, **kwargs)


class EndpointSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=ENDPOINT_TYPES)
    url = serializers.URLField(max_length=2000)


class ResourceInputSerializer(StrictSerializer):
    local_id = serializers.CharField(max_length=128)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=Resource.Kind.choices)
    site_id = serializers.UUIDField()
    accelerator = serializers.ChoiceField(choices=Resource.Accelerator.choices)
    accelerator_model = serializers.CharField(max_length=120)
    accelerator_count = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
    node_count = serializers.IntegerField(min_value=1, max_value=2**31 - 1, required=False, allow_null=True)
    status = serializers.ChoiceField(choices=[Resource.Status.ACTIVE, Resource.Status.SUSPENDED], required=False)
    fp64_tflops = _figure()
    fp32_tflops = _figure()
    fp16_tflops = _figure()
    int8_tops = _figure()
    memory_gb = _figure()
    storage_tb = _figure()
    price_per_hour = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=0, coerce_to_string=False)
    price_unit = serializers.ChoiceField(choices=Resource.PriceUnit.choices)
    price_per_million_tokens = serializers.DecimalField(max_digits=14, decimal_places=4, min_value=0, required=False,
                                                        allow_null=True, coerce_to_string=False)
    endpoints = EndpointSerializer(many=True, required=False)

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if "site_id" in values:
            values["site_id"] = str(values["site_id"])
        if "endpoints" in values:
            values["endpoints"] = [dict(e) for e in values["endpoints"]]
        return values


class SiteInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200)
    province = serializers.CharField(max_length=2)
    hub = serializers.CharField(max_length=8, required=False, allow_null=True, allow_blank=True)
    pue = FiniteFloatField(min_value=1)
    wue = FiniteFloatField(min_value=0, required=False, allow_null=True)
    cue = FiniteFloatField(min_value=0, required=False, allow_null=True)
    green_ratio = FiniteFloatField(min_value=0, max_value=1)
    rack_availability = FiniteFloatField(min_value=0, max_value=1)


class DowntimeInputSerializer(StrictSerializer):
    resource = serializers.CharField(max_length=120, required=False)
    site_id = serializers.UUIDField(required=False)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    classification = serializers.ChoiceField(choices=Downtime.Classification.choices)
    reason = serializers.CharField(max_length=500, required=False, allow_blank=True)

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if "site_id" in values:
            values["site_id"] = str(values["site_id"])
        return values
