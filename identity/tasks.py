"""Periodic identity work (Celery beat, see CELERY_BEAT_SCHEDULE): each task calls one service."""

from __future__ import annotations

from celery import shared_task

from core import idempotency

from . import credentials, keys, replay, statuslists


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def rotate_node_keys() -> dict[str, str | None]:
    rotated = {purpose: getattr(keys.rotate(purpose), "kid", None) for purpose in keys.API_PURPOSES}
    keys.prune()
    return rotated


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def renew_provider_credentials() -> dict[str, int]:
    return {"renewed": credentials.renew_due(), "revoked_after_rotation": credentials.revoke_overlapped()}


@shared_task(autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def refresh_status_lists() -> int:
    return statuslists.refresh_all()


@shared_task
def purge_idempotency_records() -> int:
    return idempotency.purge_expired()


@shared_task
def purge_seen_jtis() -> int:
    return replay.purge_expired()
