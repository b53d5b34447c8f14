"""Periodic registry work (Celery beat, see CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task

from . import indicators


@shared_task(ignore_result=True)
def refresh_indicators() -> int:
    """Recompute the national indicators ahead of their cache expiry, so no page request pays for the
    aggregates over a national catalog (seconds at a million resources)."""
    return indicators.refresh().total.resources
