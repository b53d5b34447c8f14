"""The change feed (CONTRACT §8): signed pages of this node's outbox, its own changes and those it
applied from its subordinates (relayed with their ``authority``)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from core import outbox
from core.models import NodeSetting
from identity import keys
from identity.models import Purpose
from registry.services import this_node

EPOCH_SETTING = "feed_epoch"
PAGE_LIFETIME = dt.timedelta(hours=1)
MAX_LIMIT = 1000
MAX_PAGE_BYTES = 8 * 1024 * 1024  # well under the 16 MB a change page may weigh (CONTRACT §5)


def epoch() -> str:
    """A random ID that changes only when this node's history restarts (``rotate_epoch``)."""
    setting = NodeSetting.objects.filter(key=EPOCH_SETTING).first()
    if setting is None:
        with transaction.atomic():
            setting, _ = NodeSetting.objects.get_or_create(key=EPOCH_SETTING, defaults={"value": uuid.uuid4().hex})
    return setting.value


def rotate_epoch() -> str:
    """After a restore from backup: consumers see a new epoch and re-read from 0, idempotently."""
    value = uuid.uuid4().hex
    NodeSetting.objects.update_or_create(key=EPOCH_SETTING, defaults={"value": value})
    return value


def head() -> int:
    return outbox.head()


AVAILABILITY_MARK = "feed_availability_mark"


def availability_mark() -> int:
    """The feed head right after availability was last published: a consumer past it has read it all."""
    setting = NodeSetting.objects.filter(key=AVAILABILITY_MARK).first()
    return int(setting.value) if setting else 0


def set_availability_mark(seq: int) -> None:
    NodeSetting.objects.update_or_create(key=AVAILABILITY_MARK, defaults={"value": seq})


def entry(e) -> dict[str, Any]:
    change = {"seq": e.seq, "type": e.type, "op": e.op, "key": e.key, "authority": e.authority, "record": e.record}
    if e.version is not None:
        change["version"] = e.version
    return change


def page_claims(after: int, limit: int, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    rows = list(outbox.read_after(after, limit + 1))
    has_more = len(rows) > limit
    rows = rows[:limit]
    size = 0
    for count, row in enumerate(rows):
        size += len(json.dumps(row.record, separators=(",", ":")))
        if size > MAX_PAGE_BYTES and count:
            rows, has_more = rows[:count], True  # the rest follows on the next page
            break
    issued = int(now.timestamp())
    return {
        "iss": this_node().entity_id,
        "iat": issued,
        "exp": issued + int(PAGE_LIFETIME.total_seconds()),
        "epoch": epoch(),
        "after": after,
        "next": rows[-1].seq if rows else after,
        "has_more": has_more,
        "changes": [entry(e) for e in rows],
    }


def signed_page(after: int, limit: int, now: dt.datetime | None = None) -> str:
    now = now or timezone.now()
    return keys.sign(Purpose.FEDERATION, page_claims(after, limit, now), typ="change-page+jwt", now=now).token
