"""The outbox's ``seq`` follows commit order (CONTRACT §8 "Ordering"), proven with real concurrency.

Writers run in parallel threads, each on its own PostgreSQL connection, holding their transactions open
for random moments after drawing a number; a reader polls throughout the way a change-feed consumer
does (``seq > cursor``). If a smaller ``seq`` ever committed after a larger one had been read, the
reader would step over it and the final comparison would show the gap.
"""

import random
import threading
import time

import pytest
from django.db import connection, transaction

from core import outbox
from core.models import OutboxEntry
from registry import services
from tests.support import factories

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 6
CHANGES_PER_WRITER = 25


def _change(key: str) -> outbox.Change:
    return outbox.Change("resource", "upsert", key, 1, "http://127.0.0.1:8052", {"key": key})


def _writer(index: int, errors: list[BaseException]) -> None:
    rng = random.Random(index)
    try:
        for n in range(CHANGES_PER_WRITER):
            with transaction.atomic():
                outbox.append(_change(f"w{index}-{n}"))
                time.sleep(rng.uniform(0, 0.004))  # keep the transaction open after drawing the number
                if rng.random() < 0.3:
                    outbox.append(_change(f"w{index}-{n}-b"))
    except BaseException as exc:
        errors.append(exc)
    finally:
        connection.close()


def _reader(stop: threading.Event, seen: list[int], regressions: list[tuple[int, int]]) -> None:
    cursor = 0
    try:
        while True:
            finished = stop.is_set()
            batch = list(outbox.read_after(cursor, 50).values_list("seq", flat=True))
            for seq in batch:
                if seq <= cursor:
                    regressions.append((cursor, seq))
                seen.append(seq)
                cursor = seq
            if finished and not batch:
                return
            if not batch:
                time.sleep(0.001)
    finally:
        connection.close()


def test_parallel_writers_and_a_polling_reader_miss_nothing():
    errors: list[BaseException] = []
    seen: list[int] = []
    regressions: list[tuple[int, int]] = []
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(stop, seen, regressions))
    writers = [threading.Thread(target=_writer, args=(i, errors)) for i in range(WRITERS)]
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    stop.set()
    reader.join(timeout=60)

    assert not errors
    assert not regressions
    all_seqs = list(OutboxEntry.objects.order_by("seq").values_list("seq", flat=True))
    assert len(all_seqs) >= WRITERS * CHANGES_PER_WRITER
    assert all_seqs == list(range(1, len(all_seqs) + 1)), "seq has gaps"
    assert seen == all_seqs, "the polling reader skipped or repeated entries"


def test_a_later_writer_waits_for_the_earlier_commit():
    first_drew = threading.Event()
    timeline: list[tuple[str, int]] = []

    def first() -> None:
        try:
            with transaction.atomic():
                entry = outbox.append(_change("first"))
                first_drew.set()
                time.sleep(0.3)
                timeline.append(("first committed", entry.seq))
        finally:
            connection.close()

    def second() -> None:
        try:
            first_drew.wait(5)
            with transaction.atomic():
                entry = outbox.append(_change("second"))
                timeline.append(("second drew", entry.seq))
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [event for event, _ in timeline] == ["first committed", "second drew"]
    assert timeline[0][1] < timeline[1][1]


def test_a_rolled_back_change_leaves_no_entry_and_no_gap():
    with pytest.raises(RuntimeError), transaction.atomic():
        outbox.append(_change("doomed"))
        raise RuntimeError("abort")
    with transaction.atomic():
        entry = outbox.append(_change("kept"))
    assert entry.seq == 1
    assert list(OutboxEntry.objects.values_list("key", flat=True)) == ["kept"]


def test_services_write_their_entry_in_the_same_transaction():
    factories.node()
    provider = factories.provider(code="TX")
    site = factories.site(provider)
    before = OutboxEntry.objects.count()
    with pytest.raises(RuntimeError), transaction.atomic():
        factories.resource(site)
        raise RuntimeError("the caller's transaction fails after the service returned")
    assert OutboxEntry.objects.count() == before
    resource = factories.resource(site)
    services.resource_update(resource=resource, data={"name": "renamed"})
    services.resource_retire(resource=resource)
    entries = list(OutboxEntry.objects.filter(key=resource.ucri).order_by("seq"))
    assert [(e.op, e.version) for e in entries] == [("upsert", 1), ("upsert", 2), ("retire", 3)]
    assert entries[-1].record["status"] == "retired"
