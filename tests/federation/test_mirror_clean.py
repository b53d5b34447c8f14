"""registry.mirror.full_clean keeps each field's answer per value; it must answer exactly as Django's
full_clean does (the same cleaned values, the same errors), the first time and from what it kept."""

from __future__ import annotations

import copy
import datetime as dt
import random
import uuid
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from registry import mirror
from registry.models import Provider, Resource, Site

EXCLUDE = ["provider", "site", "ucri", "province", "pue", "green_ratio", "endpoints"]
ODD_VALUES = [None, "", " ", "x" * 201, "x" * 130, "y" * 300, "ok\x00", "GPU", "TPU", "card", "node", "active",
              "retired", 0, -1, 1, 8, 2**31, 2**40, True, False, 0.0, -0.0, 1.5, -2.5, float("nan"), float("inf"),
              "12", "1.5", "abc", Decimal("1.0"), Decimal("1.00000"), Decimal("-1"), Decimal("1234567890123.5"),
              Decimal("NaN"), dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
              dt.datetime(2026, 1, 2, 11, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=8))), [], {}, [1], "2026-01-02"]


def resource() -> Resource:
    provider = Provider(pk=1, prefix="86.52.GZ01", code="GZ01", name="p", uscc="x")
    site = Site(id=uuid.uuid4(), provider=provider, name="s", province="52", pue=1.2, green_ratio=0.5,
                rack_availability=0.5)
    r = Resource(ucri="86.52.GZ01/7ZK3M9Q2AB4C-L", provider=provider, site=site, source="mirror", local_id="l-1",
                 name="pool", kind="intelligent", accelerator="GPU", accelerator_model="A100", accelerator_count=8,
                 node_count=1, status="active", fp16_tflops=2496.0, memory_gb=640.0, price_per_hour=Decimal("8.5"),
                 price_unit="card", endpoints=[], version=1, authority="http://127.0.0.1:9",
                 synced_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), province="52", hub="gz", pue=1.2, green_ratio=0.5)
    return r


def outcome(clean, instance) -> tuple:
    try:
        clean(instance)
    except ValidationError as exc:
        return ("errors", exc.message_dict)
    except Exception as exc:  # e.g. TypeError from a date field given a number: the same for both
        return (type(exc).__name__, str(exc))
    values = {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}
    return ("ok", {k: (type(v), repr(v)) for k, v in values.items()})


def django_clean(instance) -> None:
    instance.full_clean(exclude=EXCLUDE, validate_unique=False, validate_constraints=False)


def kept_clean(instance) -> None:
    mirror.full_clean(instance, EXCLUDE)


@pytest.mark.parametrize("field", ["local_id", "name", "kind", "accelerator", "accelerator_model",
                                   "accelerator_count", "node_count", "status", "fp64_tflops", "memory_gb",
                                   "price_per_hour", "price_unit", "price_per_million_tokens", "version",
                                   "retired_at", "authority", "synced_at", "operator_hold", "hub"])
def test_each_field_answers_as_django_does(field):
    mirror._cleaned.clear()
    for value in ODD_VALUES * 2:  # the second round is answered from what was kept
        base = resource()
        setattr(base, field, value)
        assert outcome(kept_clean, copy.copy(base)) == outcome(django_clean, copy.copy(base)), (field, value)


def test_records_with_several_odd_fields():
    rng = random.Random(9)
    fields = ["name", "kind", "accelerator_count", "node_count", "fp16_tflops", "price_per_hour", "status",
              "version", "retired_at", "hub"]
    for _ in range(400):
        base = resource()
        for field in rng.sample(fields, 3):
            setattr(base, field, rng.choice(ODD_VALUES))
        assert outcome(kept_clean, copy.copy(base)) == outcome(django_clean, copy.copy(base))
