"""The catalog: platforms (nodes), delegated prefixes, providers, sites, resources and downtimes.

Shaped in the GLUE 2.0 spirit (AdminDomain -> Provider, Location -> Site, ComputingService/Manager ->
Resource, Downtime) with the compute network's specifics (UCRI, hub, PUE, green-power share, price).
Writes go through ``registry.services``; models hold fields and invariants, not workflows.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import DEFERRED, F, Q
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

from core.indexes import NullsOrderedIndex
from core.models import TimeStampedModel

_ATTNAMES: dict[type, tuple[str, ...]] = {}


class LoadedWithoutInit:
    """Rows loaded from the database become instances without running ``Model.__init__`` while nothing
    listens to ``pre_init``/``post_init``: the loaded values are set as ``__init__`` would set them (these
    models have no field whose attribute does more on assignment than a fresh instance's foreign key
    does), fields not loaded stay deferred. ``__init__`` walks every field of the model for each row,
    which at national scale was a large part of resolving and discovering resources (bench/, see
    docs/benchmarks.md)."""

    @classmethod
    def from_db(cls, db, field_names, values):
        if pre_init.receivers or post_init.receivers or DEFERRED in values:
            return super().from_db(db, field_names, values)
        new = cls.__new__(cls)
        if len(values) == len(cls._meta.concrete_fields):
            field_names = _ATTNAMES.get(cls) or _ATTNAMES.setdefault(
                cls, tuple(f.attname for f in cls._meta.concrete_fields))
        new.__dict__.update(zip(field_names, values, strict=True))
        state = new._state = ModelState()
        state.adding = False
        state.db = db
        return new


class Source(models.TextChoices):
    LOCAL = "local"
    MIRROR = "mirror"


class Platform(TimeStampedModel):
    """A node of the federation: this node (``is_self``) or one it knows of."""

    class Role(models.TextChoices):
        NATIONAL = "national"
        MINISTERIAL = "ministerial"
        PROVINCIAL = "provincial"
        INDUSTRY = "industry"

    entity_id = models.URLField(max_length=255, unique=True)
    role = models.CharField(max_length=16, choices=Role.choices)
    code = models.CharField(max_length=80, blank=True, help_text="Prefix without the leading 86.")
    prefix = models.CharField(max_length=80, unique=True)
    name = models.CharField(max_length=200, blank=True)
    is_self = models.BooleanField(default=False)
    is_superior = models.BooleanField(default=False, help_text="This node's superior in the federation.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_self"], condition=Q(is_self=True), name="one_self_platform"),
            models.UniqueConstraint(fields=["is_superior"], condition=Q(is_superior=True), name="one_superior"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.entity_id})"


class Delegation(models.Model):
    """A prefix handed out once, to a platform or to a provider, never both (CONTRACT §1)."""

    class Kind(models.TextChoices):
        PLATFORM = "platform"
        PROVIDER = "provider"

    prefix = models.CharField(max_length=80, primary_key=True)
    parent = models.CharField(max_length=80)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    delegated_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.prefix} -> {self.kind}"


class Provider(LoadedWithoutInit, TimeStampedModel):
    """An approved compute provider (data centre, intelligent-computing or supercomputing centre)."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"
        REVOKED = "revoked"

    prefix = models.CharField(max_length=80, unique=True, editable=False)
    code = models.CharField(max_length=8, editable=False)
    name = models.CharField("legal name", max_length=200)
    uscc = models.CharField("unified social credit code", max_length=18)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The current credential as the identity app (or the feed, for mirrors) last set it; null/empty
    # before credentials exist (CONTRACT §3). Kept here so registry records never import identity.
    credential = models.TextField(blank=True, editable=False)
    credential_status = models.CharField(max_length=16, null=True, blank=True, editable=False)  # noqa: DJ001 - null means "no credential yet"
    credential_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    version = models.PositiveIntegerField(default=1, editable=False)
    authority = models.CharField(max_length=255, editable=False)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.LOCAL, editable=False)
    synced_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["prefix"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    def effective_credential_status(self, now=None) -> str | None:
        """``credential_status``, or ``expired`` once the credential's own ``exp`` has passed."""
        from django.utils import timezone

        if self.credential_status in (None, "revoked"):
            return self.credential_status
        if self.credential_expires_at is not None and self.credential_expires_at <= (now or timezone.now()):
            return "expired"
        return self.credential_status


class ProviderMembership(models.Model):
    """Binds a staff user to exactly one provider (CONTRACT §14)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                                related_name="provider_membership")
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="memberships")

    def __str__(self) -> str:
        return f"{self.user} @ {self.provider.prefix}"


class Site(LoadedWithoutInit, TimeStampedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="sites")
    name = models.CharField(max_length=200)
    province = models.CharField(max_length=2, help_text="GB/T 2260 two-digit code")
    hub = models.CharField(max_length=8, null=True, blank=True, editable=False)  # noqa: DJ001 - null: outside the hubs
    pue = models.FloatField("PUE", validators=[MinValueValidator(1.0)])
    wue = models.FloatField("WUE", null=True, blank=True, validators=[MinValueValidator(0.0)])
    cue = models.FloatField("CUE", null=True, blank=True, validators=[MinValueValidator(0.0)])
    green_ratio = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    rack_availability = models.FloatField(validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    version = models.PositiveIntegerField(default=1, editable=False)
    authority = models.CharField(max_length=255, editable=False)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.LOCAL, editable=False)
    synced_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["provider__prefix", "name"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "name"], name="site_name_unique_per_provider"),
        ]

    def __str__(self) -> str:
        return self.name


class Resource(LoadedWithoutInit, TimeStampedModel):
    class Kind(models.TextChoices):
        GENERAL = "general"
        INTELLIGENT = "intelligent"
        SUPER = "super"

    class Accelerator(models.TextChoices):
        CPU = "CPU", "CPU"
        GPU = "GPU", "GPU"
        NPU = "NPU", "NPU"
        FPGA = "FPGA", "FPGA"
        ASIC = "ASIC", "ASIC"

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"
        RETIRED = "retired"

    class PriceUnit(models.TextChoices):
        CARD = "card"
        CORE = "core"
        NODE = "node"

    ucri = models.CharField("UCRI", max_length=120, unique=True, editable=False)
    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="resources", editable=False)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="resources")
    local_id = models.CharField(max_length=128)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    accelerator = models.CharField(max_length=8, choices=Accelerator.choices)
    accelerator_model = models.CharField(max_length=120)
    accelerator_count = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    node_count = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    fp64_tflops = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    fp32_tflops = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    fp16_tflops = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    int8_tops = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    memory_gb = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    storage_tb = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)])
    price_per_hour = models.DecimalField(max_digits=14, decimal_places=4, validators=[MinValueValidator(0)])
    price_unit = models.CharField(max_length=8, choices=PriceUnit.choices)
    price_per_million_tokens = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True,
                                                   validators=[MinValueValidator(0)])
    endpoints = models.JSONField(default=list, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    # Set when a platform operator suspends the resource: the provider cannot reactivate it until an
    # operator lifts the hold (CONTRACT §9 "an operator may suspend any resource").
    operator_hold = models.BooleanField(default=False, editable=False)
    retired_at = models.DateTimeField(null=True, blank=True, editable=False)
    authority = models.CharField(max_length=255, editable=False)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.LOCAL, editable=False)
    synced_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Copies of the site's searchable facts so discovery filters and sorts on one table at 1M rows;
    # kept in step by the site services in the same transaction.
    province = models.CharField(max_length=2, editable=False)
    hub = models.CharField(max_length=8, null=True, blank=True, editable=False)  # noqa: DJ001 - null: outside the hubs
    pue = models.FloatField(editable=False)
    green_ratio = models.FloatField(editable=False)

    class Meta:
        ordering = ["ucri"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "local_id"], name="local_id_unique_per_provider"),
            models.CheckConstraint(
                condition=~Q(price_unit="node") | Q(node_count__isnull=False),
                name="node_count_required_for_node_price",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "ucri"], name="res_status_ucri"),
            models.Index(fields=["provider", "status", "ucri"], name="res_provider_status"),
            models.Index(fields=["hub", "status", "ucri"], name="res_hub_status"),
            models.Index(fields=["province", "status", "ucri"], name="res_province_status"),
            models.Index(fields=["accelerator", "status", "ucri"], name="res_accel_status"),
            models.Index(fields=["price_unit", "status", "price_per_hour", "ucri"], name="res_price"),
            models.Index(fields=["status", "updated_at", "ucri"], name="res_updated"),
            # The other discovery orders (CONTRACT §4), each as the keyset pagination sorts it.
            models.Index(fields=["status", "pue", "ucri"], name="res_pue"),
            NullsOrderedIndex(F("status"), F("green_ratio").desc(nulls_last=True), F("ucri"), name="res_green"),
            NullsOrderedIndex(F("status"), F("fp16_tflops").desc(nulls_last=True), F("ucri"), name="res_fp16"),
            # The greenest in a province (bench/discovery.py): without it, PostgreSQL walks res_green
            # past every other province's resources (0.2-0.5 s at 1M).
            NullsOrderedIndex(F("province"), F("status"), F("green_ratio").desc(nulls_last=True), F("ucri"),
                              name="res_province_green"),
            # The foreign key's own index serves ``site``, and on PostgreSQL the unique ``ucri`` has a
            # varchar_pattern_ops twin for LIKE 'prefix%' (the ``prefix`` filter).
        ]

    def __str__(self) -> str:
        return self.ucri or f"(unminted) {self.local_id}"

    @property
    def is_retired(self) -> bool:
        return self.status == self.Status.RETIRED


class Downtime(LoadedWithoutInit, TimeStampedModel):
    class Classification(models.TextChoices):
        SCHEDULED = "scheduled"
        UNSCHEDULED = "unscheduled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="downtimes", editable=False)
    resource = models.ForeignKey(Resource, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="downtimes")
    site = models.ForeignKey(Site, null=True, blank=True, on_delete=models.CASCADE, related_name="downtimes")
    start = models.DateTimeField()
    end = models.DateTimeField()
    classification = models.CharField(max_length=16, choices=Classification.choices)
    reason = models.CharField(max_length=500, blank=True)
    version = models.PositiveIntegerField(default=1, editable=False)
    authority = models.CharField(max_length=255, editable=False)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.LOCAL, editable=False)
    synced_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["start"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(resource__isnull=False, site__isnull=True) | Q(resource__isnull=True, site__isnull=False)),
                name="downtime_scope_resource_xor_site",
            ),
            models.CheckConstraint(condition=Q(end__gt=models.F("start")), name="downtime_end_after_start"),
        ]
        indexes = [
            models.Index(fields=["resource", "end"], name="downtime_resource_end"),
            models.Index(fields=["site", "end"], name="downtime_site_end"),
        ]

    def __str__(self) -> str:
        target = self.resource.ucri if self.resource_id else (self.site.name if self.site_id else "?")
        return f"{self.classification} downtime of {target} {self.start:%Y-%m-%d %H:%M}"


class Availability(LoadedWithoutInit, models.Model):
    """The latest live availability report of a resource (CONTRACT §13). Kept apart from the resource
    row: providers report every few seconds, and availability never bumps ``version``."""

    resource = models.OneToOneField(Resource, primary_key=True, on_delete=models.CASCADE,
                                    related_name="availability")
    available_units = models.PositiveIntegerField()
    queued_jobs = models.PositiveIntegerField(null=True, blank=True)
    observed_at = models.DateTimeField()
    valid_for = models.PositiveIntegerField()
    expires_at = models.DateTimeField()
    authority = models.CharField(max_length=255)
    # Set when a newer report arrived since the change feed last carried this resource: the feed
    # publishes one entry per dirty resource per pull, however many reports came in between.
    unpublished = models.BooleanField(default=True)

    class Meta:
        indexes = [
            models.Index(fields=["available_units"], name="availability_units"),
            models.Index(fields=["expires_at"], name="availability_expiry"),
            models.Index(fields=["unpublished"], name="availability_unpublished",
                         condition=Q(unpublished=True)),
        ]
        verbose_name_plural = "availability"

    def __str__(self) -> str:
        return f"{self.available_units} units of {self.resource_id} at {self.observed_at:%H:%M:%S}"


class MirrorTombstone(models.Model):
    """A mirrored key that its origin deleted (a downtime): remembered so that replaying an older
    upsert never brings it back (CONTRACT §8 "highest version per key wins")."""

    type = models.CharField(max_length=16)
    key = models.CharField(max_length=128)
    version = models.PositiveIntegerField()
    retired_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["type", "key"], name="mirror_tombstone_once")]

    def __str__(self) -> str:
        return f"{self.type} {self.key} retired at v{self.version}"
