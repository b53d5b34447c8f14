"""A resource's status history, read from the outbox (the change feed's own store).

Every write of a resource appends an outbox entry holding the full record at that version, and
mirrored changes are relayed into our outbox by ``registry.mirror.apply``, so the same rows tell the
story of local and mirrored resources alike. Only the rows where the status changed are returned.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import F, TextField, Value
from django.db.models.expressions import Window
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Lag
from django.utils.dateparse import parse_datetime

from core.models import OutboxEntry

# A resource changes status a handful of times in its life; the cap only guards the page against a
# pathological feed. The newest changes are kept.
MAX_CHANGES = 100


@dataclass(frozen=True)
class StatusChange:
    version: int | None
    status: str
    changed_at: dt.datetime  # when the origin made this version (record ``updated_at``)
    recorded_at: dt.datetime  # when the version entered this node's outbox (later on a mirror)


def status_history(ucri: str, *, limit: int = MAX_CHANGES) -> list[StatusChange]:
    """The versions of ``ucri`` at which its status changed, oldest first (the first version included).

    One query on the ``outbox_type_key_seq`` index: a window compares each row's status with the
    previous row's, and only the rows where it differs leave the database.
    """
    status = KeyTextTransform("status", "record")
    rows = (OutboxEntry.objects.filter(type="resource", key=ucri)
            .annotate(status_value=status,
                      updated=KeyTextTransform("updated_at", "record"),
                      previous=Coalesce(Window(Lag(status), order_by=F("seq").asc()), Value(""),
                                        output_field=TextField()))
            .exclude(previous=F("status_value"))
            .order_by("-seq")
            .values_list("version", "status_value", "updated", "recorded_at"))[:limit]
    changes = [
        StatusChange(version=version, status=value or "", recorded_at=recorded_at,
                     changed_at=_parsed(updated) or recorded_at)
        for version, value, updated, recorded_at in rows
    ]
    changes.reverse()
    return changes


def _parsed(value: str | None) -> dt.datetime | None:
    parsed = parse_datetime(value) if isinstance(value, str) else None
    return parsed if parsed is not None and parsed.tzinfo is not None else None
