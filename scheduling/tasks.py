"""Scheduling background work (Celery beat)."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task
def expire_handoffs() -> int:
    """Mark tickets that were never acknowledged before their expiry as ``expired``."""
    return services.expire_due()
