"""Every call to another node carries the current request id (federation/clients.py), including the
change page fetched ahead in sync's background thread."""

from __future__ import annotations

import re
import threading

import pytest
import requests

from core import requestid
from federation import clients, services, sync
from federation.models import Peer
from tests.federation.test_consumer import NATIONAL, catalog
from tests.support import factories
from tests.support.fakepeer import FakePeer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch):
    """(thread name, X-Request-ID, url) of every HTTP request the federation client makes."""
    seen: list[tuple[str, str | None, str]] = []
    real = requests.request

    def recording(method, url, **kwargs):
        seen.append((threading.current_thread().name, kwargs.get("headers", {}).get("X-Request-ID"), url))
        return real(method, url, **kwargs)

    monkeypatch.setattr(clients.requests, "request", recording)
    return seen


@pytest.fixture
def peer_gz():
    factories.node(role="national", code=None, entity_id=NATIONAL)
    fake = FakePeer(prefixes=["86.52"], authority_hints=[NATIONAL])
    services.subordinate_add(entity_id=fake.url, prefix="86.52", actor="test")
    yield fake
    fake.close()


def test_a_pull_sends_one_id_on_every_call_including_the_page_fetched_ahead(peer_gz, sent):
    catalog(peer_gz)
    catalog(peer_gz, prefix="86.52.GZ02")
    sent.clear()
    with requestid.using("superior-sync-0001"):
        report = sync.pull(Peer.objects.get(entity_id=peer_gz.url), page_size=1)
    assert report.error is None and report.pages >= 6
    assert {request_id for _, request_id, _ in sent} == {"superior-sync-0001"}
    ahead = [url for thread, _, url in sent if thread.startswith("cir-page-ahead")]
    assert ahead and all(url.endswith("/federation/changes") for url in ahead)


def test_a_call_outside_any_request_gets_a_fresh_id_kept_for_the_work(peer_gz, sent):
    sent.clear()

    def work() -> None:  # a thread of its own: no id yet
        clients.entity_configuration(peer_gz.url)
        clients.entity_configuration(peer_gz.url)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    ids = [request_id for _, request_id, _ in sent]
    assert len(ids) == 2 and ids[0] == ids[1] and re.fullmatch(r"[0-9a-f]{32}", ids[0])
