"""Shared models: the base model, the transactional outbox and the hash-chained audit log."""

from __future__ import annotations

from django.db import models


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True, editable=False)

    class Meta:
        abstract = True


class Counter(models.Model):
    """A named sequence (``outbox``, ``audit``). Incrementing it row-locks it until commit, which is
    what makes ``seq`` follow commit order."""

    name = models.CharField(max_length=32, primary_key=True)
    last = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.last}"


class OutboxEntry(models.Model):
    """One change to the catalog, written in the same transaction as the change itself.

    ``seq`` increases in commit order (see ``core.outbox``): a reader that has seen ``seq`` S never
    later finds an entry with a smaller one. The federation change feed is read from here.
    """

    class Op(models.TextChoices):
        UPSERT = "upsert"
        RETIRE = "retire"

    seq = models.BigIntegerField(unique=True)
    type = models.CharField(max_length=16)
    op = models.CharField(max_length=8, choices=Op.choices)
    key = models.CharField(max_length=128)
    version = models.PositiveIntegerField(null=True)
    authority = models.CharField(max_length=255)
    record = models.JSONField()
    recorded_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "outbox entries"
        indexes = [models.Index(fields=["type", "key", "seq"], name="outbox_type_key_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}/{self.op} {self.key}"


class AuditEntry(models.Model):
    """An operator, credential or key event. Each entry carries the previous entry's hash."""

    seq = models.BigIntegerField(unique=True)
    at = models.DateTimeField()
    actor = models.CharField(max_length=255)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_key = models.CharField(max_length=255, blank=True)
    data = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.target_type}:{self.target_key} by {self.actor}"


class NodeSetting(models.Model):
    """Small per-node key/value facts (e.g. the change feed's epoch)."""

    key = models.CharField(max_length=64, primary_key=True)
    value = models.JSONField()

    def __str__(self) -> str:
        return self.key



class IdempotencyRecord(models.Model):
    """The first response to a creating POST, replayed for retries with the same key and body."""

    client_id = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(null=True)
    body = models.BinaryField(null=True)
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["client_id", "key"], name="idempotency_key_once")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.client_id}: {self.key}"
