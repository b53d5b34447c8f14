"""Admin pages for federation: each peer's chain status and expiry, cursor, lag, last error and
violations; pinned anchors. Read-only: peers change only through the join commands and sync."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from registry.admin import OperatorOnlyAdmin, ReadOnlyOperatorAdmin

from .models import AuditCheckpoint, Peer, PeerCheckpoint, TrustAnchor, Violation


class ReadOnly(ReadOnlyOperatorAdmin):
    def has_delete_permission(self, request, obj=None) -> bool:
        # A superuser may clear old violations and checkpoints; nothing else is ever edited here.
        return request.user.is_superuser and OperatorOnlyAdmin.has_delete_permission(self, request, obj)


@admin.register(Peer)
class PeerAdmin(ReadOnly):
    list_display = ("entity_id", "relation", "prefix_list", "chain_status", "cursor", "lag", "last_success_at",
                    "consecutive_failures", "violations", "short_error")
    list_filter = ("relation",)
    readonly_fields = ("entity_id", "relation", "prefixes", "jwks", "metadata", "configuration_expires_at", "epoch",
                       "cursor", "origin_head", "lag", "pull_requested_at", "last_pull_at", "last_success_at",
                       "last_error", "consecutive_failures", "applied", "stale", "skipped_unknown", "violations",
                       "notified_seq")
    # Violations are listed on their own page (filter by peer): a lying peer can send thousands.

    @admin.display(description="prefixes")
    def prefix_list(self, peer: Peer) -> str:
        return ", ".join(peer.prefixes) or "-"

    @admin.display(description="chain")
    def chain_status(self, peer: Peer) -> str:
        if peer.configuration_expires_at is None:
            return "not verified yet"
        if peer.configuration_expires_at <= timezone.now():
            return f"expired {peer.configuration_expires_at:%Y-%m-%d %H:%M}"
        return f"valid until {peer.configuration_expires_at:%Y-%m-%d %H:%M}"

    @admin.display(description="last error")
    def short_error(self, peer: Peer) -> str:
        return (peer.last_error[:80] + "…") if len(peer.last_error) > 80 else (peer.last_error or "-")


@admin.register(Violation)
class ViolationAdmin(ReadOnly):
    list_display = ("created_at", "peer", "seq", "type", "key", "reason")
    list_filter = ("reason", "peer")
    search_fields = ("key", "detail")
    readonly_fields = ("peer", "seq", "type", "key", "reason", "detail", "record", "created_at")


@admin.register(TrustAnchor)
class TrustAnchorAdmin(ReadOnly):
    list_display = ("entity_id", "created_at")
    readonly_fields = ("entity_id", "jwks", "created_at", "updated_at")


@admin.register(PeerCheckpoint)
class PeerCheckpointAdmin(ReadOnly):
    list_display = ("peer", "seq", "head", "fetched_at")
    readonly_fields = ("peer", "seq", "head", "token", "fetched_at")


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnly):
    list_display = ("seq", "head", "created_at")
    readonly_fields = ("seq", "head", "token", "created_at")
