"""A real Celery worker (separate process, Redis broker) runs a beat task against our database."""

from __future__ import annotations

import uuid

import pytest
import redis

from config.celery import app
from identity import credentials, tasks
from identity.models import StatusList
from tests.support import factories
from tests.support.processes import celery_worker, database_url_for_children, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
BROKER = "redis://127.0.0.1:6379/14"


@pytest.fixture
def broker():
    try:
        redis.Redis.from_url(BROKER).ping()
    except redis.exceptions.ConnectionError:
        pytest.fail("Redis is not running on 127.0.0.1:6379 (scripts/test starts it)")
    previous = dict(app.conf)
    app.conf.update(broker_url=BROKER, task_always_eager=False)
    yield BROKER
    app.conf.update(broker_url=previous.get("broker_url"), task_always_eager=previous.get("task_always_eager"))


def test_worker_resigns_a_changed_status_list(broker):
    factories.node()
    onboarded = credentials.onboard(name="Worker Co", uscc=factories.valid_uscc(), code="WK01", actor="test")
    status_list = StatusList.objects.get(pk=onboarded.credential.status_list_id)
    StatusList.objects.filter(pk=status_list.pk).update(version=status_list.version + 1)  # token now stale
    queue = f"cir-test-{uuid.uuid4().hex[:8]}"
    with celery_worker(queue, broker, database_url_for_children()) as worker:
        tasks.refresh_status_lists.apply_async(queue=queue)

        def resigned() -> bool:
            fresh = StatusList.objects.get(pk=status_list.pk)
            return fresh.token_version == fresh.version

        try:
            wait_for(resigned, timeout=60, what="the worker to re-sign the status list")
        except AssertionError:
            worker.terminate()
            print(worker.communicate(timeout=10)[0])
            raise
    fresh = StatusList.objects.get(pk=status_list.pk)
    assert fresh.token_version == fresh.version and fresh.token != status_list.token
