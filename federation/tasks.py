"""Federation background work (Celery): each task calls one service and retries with backoff."""

from __future__ import annotations

import datetime as dt

from celery import shared_task
from django.db.models import F

from core.errors import ApplicationError

from . import chains, checkpoints, clients, sync
from .models import Peer

PULL_INTERVAL = dt.timedelta(seconds=60)


@shared_task(acks_late=True)
def pull_subordinate(peer_id: int) -> dict:
    peer = Peer.objects.filter(pk=peer_id, relation=Peer.Relation.SUBORDINATE).first()
    if peer is None:
        return {"skipped": "no such subordinate"}
    report = sync.pull(peer)
    if report.applied:
        notify_superior.delay()  # relay upward without waiting for beat
    return {"peer": report.peer, "pages": report.pages, "applied": report.applied, "error": report.error}


@shared_task
def pull_due_subordinates() -> int:
    """Periodic catch-up: every subordinate is pulled at least each PULL_INTERVAL, sooner when notified."""
    due = [p.pk for p in Peer.objects.filter(relation=Peer.Relation.SUBORDINATE)
           if sync.due_for_pull(p, interval=PULL_INTERVAL)]
    for peer_id in due:
        pull_subordinate.delay(peer_id)
    return len(due)


@shared_task(autoretry_for=(clients.PeerError,), retry_backoff=True, max_retries=5)
def notify_superior() -> bool:
    return sync.notify_superior()


@shared_task
def refresh_peers() -> int:
    chains.refresh_anchors()
    refreshed = 0
    for peer in Peer.objects.all():
        chains.forget(peer.entity_id)  # rebuild cached chains in the background, not at first use
        try:
            chains.refresh_peer(peer, force=True)
            chains.chain_for(peer.entity_id)
            refreshed += 1
        except (chains.ChainError, clients.PeerError) as exc:
            # Recorded on the peer as a pull failure is: a superior is never pulled, so without this its
            # broken chain would show as "not yet resolved" rather than invalid (federation status page).
            Peer.objects.filter(pk=peer.pk).update(last_error=f"{exc.reason}: {exc}"[:2000],
                                                   consecutive_failures=F("consecutive_failures") + 1)
            continue
        if peer.relation == Peer.Relation.SUPERIOR and peer.consecutive_failures:
            Peer.objects.filter(pk=peer.pk).update(last_error="", consecutive_failures=0)
    return refreshed


@shared_task
def sign_audit_checkpoint() -> dict:
    """Beat, every 30 s: sign a checkpoint of the audit head when it advanced (CONTRACT §8). A refusal
    (the log no longer holds the last signed head) is logged as an error by the service."""
    try:
        checkpoint = checkpoints.sign_if_advanced()
    except ApplicationError as exc:
        return {"signed": None, "error": exc.code}
    return {"signed": checkpoint.seq if checkpoint else None}
