"""A Celery worker killed (SIGKILL) in the middle of a sync: the next pull resumes where the last
committed page ended, with nothing lost and nothing applied twice (CONTRACT §8)."""

from __future__ import annotations

import time

import pytest

from tests.support.nodes import create_node, eventually, join
from tests.support.processes import wait_for

pytestmark = pytest.mark.federation

COUNTS = """
from core.models import OutboxEntry
from django.db.models import Count
from registry.models import Resource
from federation.models import Peer
peer = Peer.objects.filter(relation="subordinate").first()
dupes = OutboxEntry.objects.values("type", "key", "version").annotate(n=Count("id")).filter(n__gt=1).count()
print(Resource.objects.count(), peer.cursor if peer else -1, dupes)
"""
TRIGGER = """
from federation.models import Peer
from federation.tasks import pull_subordinate
pull_subordinate.delay(Peer.objects.get(relation="subordinate").pk)
"""


def cursor_of(node) -> int:
    """The national node's cursor on its subordinate, read straight from its database: polling through
    ``manage.py shell`` takes a second or two, longer than a fast sync of a few pages is under way."""
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={node.database}") as conn:
        row = conn.execute("SELECT cursor FROM federation_peer WHERE relation = 'subordinate'").fetchone()
    return row[0] if row else -1


def counts(node) -> tuple[int, int, int]:
    resources, cursor, dupes = (int(x) for x in node.shell(COUNTS).split()[-3:])
    return resources, cursor, dupes


def test_killed_worker_resumes_without_loss_or_duplicates():
    national = create_node("crash-national", role="national", redis_db=9, extra_env={"CIR_SYNC_PAGE_SIZE": "50"})
    provincial = create_node("crash-gz", role="provincial", code="52")
    try:
        national.start_server()
        provincial.start_server()
        join(provincial, national, anchor=national, prefix="86.52")
        demo = provincial.manage("cir_demo", "--seed", "5", "--resources", "6000", "--json")
        head = int(provincial.shell("from core import outbox; print(outbox.head())").split()[-1])
        worker = national.start_worker()
        national.shell(TRIGGER)
        wait_for(lambda: cursor_of(national) > 0, timeout=120, interval=0.02, what="the sync to be under way")
        national.kill(worker)
        interrupted_at = counts(national)[1]
        assert 0 < interrupted_at < head
        time.sleep(1)
        assert counts(national)[1] == interrupted_at  # nothing moves while no worker runs

        national.start_worker()
        national.shell(TRIGGER)
        eventually(lambda: counts(national)[1] == head, timeout=300, what="the sync to finish", nodes=[national])
        resources, _, duplicates = counts(national)
        violations = national.shell(
            "from federation.models import Violation; from collections import Counter; "
            "print(dict(Counter(Violation.objects.values_list('reason', flat=True))), "
            "[v.detail for v in Violation.objects.all()[:3]])")
        assert violations.startswith("{}"), violations
        assert resources == demo["resources"] == counts(provincial)[0]
        assert duplicates == 0
    finally:
        national.drop()
        provincial.drop()
