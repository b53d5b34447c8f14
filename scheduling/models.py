"""Handoffs: a scheduler's authorised, single-use hand-over of one job to one provider endpoint."""

from __future__ import annotations

import uuid

from django.db import models


class Handoff(models.Model):
    class Status(models.TextChoices):
        ISSUED = "issued"
        ACCEPTED = "accepted"
        REJECTED = "rejected"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    ucri = models.CharField(max_length=120, db_index=True)
    provider_prefix = models.CharField(max_length=80, db_index=True)
    scheduler = models.CharField(max_length=255, db_index=True, help_text="The requesting client_id.")
    endpoint = models.URLField(max_length=2000)
    job_sha256 = models.CharField(max_length=64)
    jkt = models.CharField(max_length=64, help_text="Thumbprint of the key the ticket is bound to.")
    ticket_jti = models.CharField(max_length=64, unique=True)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ISSUED)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-issued_at"]
        indexes = [models.Index(fields=["status", "expires_at"], name="handoff_status_expiry")]

    def __str__(self) -> str:
        return f"handoff {self.id} of {self.ucri} ({self.status})"
