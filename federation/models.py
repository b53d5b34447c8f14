"""Federation state: pinned trust anchors, peers (superior and subordinates) and sync bookkeeping."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from core.models import TimeStampedModel


class TrustAnchor(TimeStampedModel):
    """A pinned trust anchor: trusted because an operator pinned its keys, never because it signs itself."""

    entity_id = models.URLField(max_length=255, unique=True)
    jwks = models.JSONField(help_text="Pinned federation public keys (JWK objects).")

    def __str__(self) -> str:
        return self.entity_id


class Peer(TimeStampedModel):
    """Another node this node talks to: its superior or one of its subordinates."""

    class Relation(models.TextChoices):
        SUPERIOR = "superior"
        SUBORDINATE = "subordinate"

    entity_id = models.URLField(max_length=255, unique=True)
    relation = models.CharField(max_length=16, choices=Relation.choices)
    prefixes = models.JSONField(default=list, help_text="Prefixes delegated to a subordinate.")
    jwks = models.JSONField(default=list, help_text="The peer's federation keys as pinned or vouched for.")
    metadata = models.JSONField(default=dict, help_text="compute_registry metadata from its configuration.")
    configuration_expires_at = models.DateTimeField(null=True, blank=True)
    # Change-feed consumer state (subordinates).
    epoch = models.CharField(max_length=64, blank=True)
    cursor = models.BigIntegerField(default=0)
    origin_head = models.BigIntegerField(default=0, help_text="Latest seq the peer reported (notify or a page).")
    pull_requested_at = models.DateTimeField(null=True, blank=True)
    last_pull_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    applied = models.BigIntegerField(default=0)
    stale = models.BigIntegerField(default=0, help_text="Changes skipped because we already had that version.")
    skipped_unknown = models.BigIntegerField(default=0, help_text="Entries of types this node does not know.")
    violations = models.BigIntegerField(default=0)
    notified_seq = models.BigIntegerField(default=0, help_text="Our outbox head last announced to a superior.")

    class Meta:
        ordering = ["relation", "entity_id"]

    def __str__(self) -> str:
        return f"{self.relation} {self.entity_id}"

    @property
    def lag(self) -> int:
        return max(0, self.origin_head - self.cursor)


class Violation(models.Model):
    """A change a peer sent that we refused to apply, kept for inspection."""

    peer = models.ForeignKey(Peer, on_delete=models.CASCADE, related_name="violation_log")
    seq = models.BigIntegerField(null=True, blank=True)
    type = models.CharField(max_length=32, blank=True)
    key = models.CharField(max_length=255, blank=True)
    reason = models.CharField(max_length=64)
    detail = models.TextField(blank=True)
    record = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["peer", "created_at"], name="violation_peer_time")]

    def __str__(self) -> str:
        return f"{self.peer.entity_id} #{self.seq}: {self.reason}"


class PeerCheckpoint(models.Model):
    """A subordinate's audit checkpoint, fetched and kept during sync (CONTRACT §8)."""

    peer = models.ForeignKey(Peer, on_delete=models.CASCADE, related_name="checkpoints")
    seq = models.BigIntegerField()
    head = models.CharField(max_length=64)
    token = models.TextField()
    fetched_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-seq"]
        constraints = [models.UniqueConstraint(fields=["peer", "seq"], name="checkpoint_once")]

    def __str__(self) -> str:
        return f"{self.peer.entity_id} audit #{self.seq}"


class AuditCheckpoint(models.Model):
    """This node's own signed commitment to its audit log's head (CONTRACT §5, §8). Kept forever: an
    entry covered by a checkpoint can no longer be edited, deleted or re-hashed unnoticed."""

    seq = models.BigIntegerField(unique=True, help_text="seq of the head entry (0: empty log).")
    head = models.CharField(max_length=64, help_text="hash of the head entry.")
    token = models.TextField(help_text="The signed audit-checkpoint+jwt.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"audit checkpoint #{self.seq}"
