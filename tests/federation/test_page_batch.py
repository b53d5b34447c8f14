"""A page applied set-based (registry.mirror_batch) ends exactly as applying its changes one by one
(mirror.apply) would: the same catalog, the same relayed outbox entries in the same order, the same
violations. Each scenario runs both ways and asserts the end state explicitly."""

from __future__ import annotations

import uuid

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import outbox
from core.models import OutboxEntry
from federation import services, sync
from federation.models import Peer, Violation
from registry import identifiers, mirror_batch
from registry.models import Downtime, Provider, Resource, Site
from registry.records import timestamp
from tests.federation.test_consumer import NATIONAL, provider_record, resource_record, site_record
from tests.support import factories
from tests.support.fakepeer import FakePeer

pytestmark = pytest.mark.django_db(transaction=True)
GZ01 = "86.52.GZ01"


@pytest.fixture(params=["batch", "one_by_one"])
def mode(request, monkeypatch):
    if request.param == "one_by_one":  # the reference: every change through mirror.apply
        for run in ("_catalog", "_availability"):
            monkeypatch.setattr(mirror_batch, run,
                                lambda run, now, verify: [mirror_batch._one(c, now, verify) for c in run])
    return request.param


@pytest.fixture
def peer(mode):
    factories.node(role="national", code=None, entity_id=NATIONAL)
    fake = FakePeer(prefixes=["86.52"], authority_hints=[NATIONAL])
    services.subordinate_add(entity_id=fake.url, prefix="86.52", actor="test")
    yield fake
    fake.close()


def pull(fake: FakePeer, **kwargs) -> sync.PullReport:
    return sync.pull(Peer.objects.get(entity_id=fake.url), **kwargs)


def relayed() -> list[tuple]:
    return list(OutboxEntry.objects.order_by("seq").values_list("type", "op", "key", "version", "authority"))


def relayed_records() -> list[dict]:
    return list(OutboxEntry.objects.order_by("seq").values_list("record", flat=True))


def violations(fake: FakePeer) -> list[tuple[int | None, str]]:
    return list(Violation.objects.filter(peer__entity_id=fake.url).order_by("id").values_list("seq", "reason"))


def seqs() -> list[int]:
    return list(OutboxEntry.objects.order_by("seq").values_list("seq", flat=True))


def provider_and_site(fake: FakePeer, prefix: str = GZ01, **site_overrides) -> str:
    site_id = str(uuid.uuid4())
    fake.add("provider", prefix, provider_record(prefix), version=1)
    fake.add("site", site_id, site_record(site_id, prefix, **site_overrides), version=1)
    return site_id


def test_two_changes_for_one_key_in_a_page(peer):
    site_id = provider_and_site(peer)
    ucri, other = identifiers.mint(GZ01), identifiers.mint(GZ01)
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id, name="v1"), version=1)
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id, version=2, name="v2"), version=2)
    peer.add("resource", other, resource_record(other, GZ01, site_id, version=3, name="v3"), version=3)
    peer.add("resource", other, resource_record(other, GZ01, site_id, version=2, name="v2"), version=2)
    report = pull(peer)
    assert (report.applied, report.stale, report.violations) == (5, 1, 0)
    assert {r.ucri: (r.version, r.name) for r in Resource.objects.all()} == {ucri: (2, "v2"), other: (3, "v3")}
    url = peer.url
    assert relayed() == [("provider", "upsert", GZ01, 1, url), ("site", "upsert", site_id, 1, url),
                         ("resource", "upsert", ucri, 1, url), ("resource", "upsert", ucri, 2, url),
                         ("resource", "upsert", other, 3, url)]
    assert [r["name"] for r in relayed_records()[2:]] == ["v1", "v2", "v3"]
    assert seqs() == [1, 2, 3, 4, 5]


def test_a_page_mixing_new_stale_and_violating_changes(peer):
    site_id = provider_and_site(peer)
    held = identifiers.mint(GZ01)
    peer.add("resource", held, resource_record(held, GZ01, site_id, version=2, name="held"), version=2)
    pull(peer)
    fresh, bad, twin = identifiers.mint(GZ01), identifiers.mint(GZ01), identifiers.mint(GZ01)
    peer.add("resource", held, resource_record(held, GZ01, site_id, version=1, name="old"), version=1)  # 4 stale
    peer.add("resource", fresh, resource_record(fresh, GZ01, site_id), version=1)  # 5 new
    peer.add("resource", bad, resource_record(bad, GZ01, site_id, accelerator="TPU"), version=1)  # 6 invalid
    peer.add("resource", bad, resource_record(bad, GZ01, str(uuid.uuid4())), version=1)  # 7 unknown site
    peer.add("resource", twin, resource_record(twin, GZ01, site_id, local_id=f"l-{held[-6:]}"), version=1)  # 8
    peer.add("provider", "86.11.BJ01", provider_record("86.11.BJ01"), version=1)  # 9 outside
    peer.add("resource", held, resource_record(held, GZ01, site_id, version=3, name="new"), version=3)  # 10
    report = pull(peer)
    assert (report.applied, report.stale, report.violations) == (2, 1, 4)
    assert violations(peer) == [(6, "invalid_record"), (7, "unknown_reference"), (8, "conflict"),
                                (9, "outside_delegation")]
    assert {r.ucri: (r.version, r.name) for r in Resource.objects.all()} == {
        held: (3, "new"), fresh: (1, "Mirrored pool")}
    assert relayed()[3:] == [("resource", "upsert", fresh, 1, peer.url), ("resource", "upsert", held, 3, peer.url)]
    assert seqs() == [1, 2, 3, 4, 5]
    assert Peer.objects.get(entity_id=peer.url).cursor == 10


def test_a_site_and_its_resources_in_one_page_and_a_site_change_after_them(peer):
    site_id = provider_and_site(peer, province="52", pue=1.3, green_ratio=0.4)
    first, second = identifiers.mint(GZ01), identifiers.mint(GZ01)
    peer.add("resource", first, resource_record(first, GZ01, site_id), version=1)
    # The site moves to Inner Mongolia after `first` and before `second`, in the same page.
    peer.add("site", site_id, site_record(site_id, GZ01, version=2, province="15", hub="nm", pue=1.1,
                                          green_ratio=0.9), version=2)
    peer.add("resource", second, resource_record(second, GZ01, site_id), version=1)
    report = pull(peer)
    assert (report.applied, report.violations) == (5, 0)
    site = Site.objects.get(pk=site_id)
    assert (site.version, site.province, site.hub, site.pue, site.green_ratio) == (2, "15", "nm", 1.1, 0.9)
    for ucri in (first, second):
        resource = Resource.objects.get(ucri=ucri)
        assert (resource.province, resource.hub, resource.pue, resource.green_ratio) == ("15", "nm", 1.1, 0.9)
        assert resource.source == "mirror" and resource.authority == peer.url and resource.synced_at
    assert [(t, k, v) for t, _, k, v, _ in relayed()] == [("provider", GZ01, 1), ("site", site_id, 1),
                                                          ("resource", first, 1), ("site", site_id, 2),
                                                          ("resource", second, 1)]
    # A later page changing the site again reaches the resources already held.
    peer.add("site", site_id, site_record(site_id, GZ01, version=3, province="52", hub="gz", pue=1.25,
                                          green_ratio=0.5), version=3)
    assert pull(peer).applied == 1
    assert set(Resource.objects.values_list("province", "hub", "pue", "green_ratio")) == {("52", "gz", 1.25, 0.5)}


def test_a_retire_after_an_upsert_in_one_page_is_final(api, peer):
    site_id = provider_and_site(peer)
    ucri = identifiers.mint(GZ01)
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id, version=2, status="retired"), op="retire",
             version=2)
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id, version=3, name="revived"), version=3)
    report = pull(peer)
    assert (report.applied, report.stale, report.violations) == (4, 1, 0)
    resource = Resource.objects.get(ucri=ucri)
    assert (resource.version, resource.status, resource.name) == (2, "retired", "Mirrored pool")
    assert resource.retired_at is not None
    assert api.get(f"/api/v1/resolve/{ucri}").status_code == 410
    assert relayed()[2:] == [("resource", "upsert", ucri, 1, peer.url), ("resource", "retire", ucri, 2, peer.url)]


def test_updates_of_held_resources_many_and_few(peer):
    site_id = provider_and_site(peer)
    ucris = [identifiers.mint(GZ01) for _ in range(6)]
    for ucri in ucris:
        peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)
    pull(peer)
    created = {r.ucri: (r.pk, r.created_at) for r in Resource.objects.all()}
    stamp = "2030-01-02T03:04:05Z"
    for ucri in ucris:  # six held rows at once: one UPDATE from a scratch table
        peer.add("resource", ucri, resource_record(ucri, GZ01, site_id, version=2, name=f"n-{ucri[-4:]}",
                                                   price_per_hour=0.123, updated_at=stamp), version=2)
    assert pull(peer).applied == 6
    peer.add("resource", ucris[0], resource_record(ucris[0], GZ01, site_id, version=3, name="one"), version=3)
    assert pull(peer).applied == 1  # one held row: a plain UPDATE
    rows = {r.ucri: r for r in Resource.objects.all()}
    assert {u: (r.pk, r.created_at) for u, r in rows.items()} == created  # updated in place
    assert rows[ucris[0]].name == "one" and rows[ucris[0]].version == 3
    for ucri in ucris[1:]:
        row = rows[ucri]
        assert (row.version, row.name, str(row.price_per_hour), timestamp(row.updated_at)) == (
            2, f"n-{ucri[-4:]}", "0.1230", stamp)
    assert len(relayed()) == 2 + 6 + 6 + 1


def test_a_downtime_between_catalog_changes_sees_the_resource_before_it(peer):
    site_id = provider_and_site(peer)
    ucri, later = identifiers.mint(GZ01), identifiers.mint(GZ01)
    downtime_id = str(uuid.uuid4())
    now = timezone.now()
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)
    peer.add("downtime", downtime_id, {"id": downtime_id, "version": 1, "resource": ucri, "site_id": None,
                                       "provider": GZ01, "start": timestamp(now + timezone.timedelta(days=1)),
                                       "end": timestamp(now + timezone.timedelta(days=2)),
                                       "classification": "scheduled", "reason": "maintenance"}, version=1)
    peer.add("resource", later, resource_record(later, GZ01, site_id), version=1)
    report = pull(peer)
    assert (report.applied, report.violations) == (5, 0)
    assert Downtime.objects.get(pk=downtime_id).resource.ucri == ucri
    assert [(t, k) for t, _, k, _, _ in relayed()] == [("provider", GZ01), ("site", site_id), ("resource", ucri),
                                                       ("downtime", downtime_id), ("resource", later)]


def test_a_provider_and_its_catalog_across_pages_and_a_revoked_provider(peer):
    site_id = provider_and_site(peer)
    ucri = identifiers.mint(GZ01)
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)
    peer.add("provider", GZ01, provider_record(GZ01, version=2, status="revoked"), version=2)
    peer.add("provider", GZ01, provider_record(GZ01, version=3), version=3)
    report = pull(peer, page_size=2)
    assert (report.applied, report.pages, report.violations) == (4, 3, 1)
    assert violations(peer) == [(5, "revocation_is_final")]
    assert Provider.objects.get(prefix=GZ01).status == "revoked"
    assert Resource.objects.get(ucri=ucri).provider.prefix == GZ01


def test_a_page_costs_a_bounded_number_of_statements(peer, mode):
    site_id = provider_and_site(peer)
    for _ in range(300):
        ucri = identifiers.mint(GZ01)
        peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)
    with CaptureQueriesContext(connection) as queries:
        report = pull(peer)
    assert report.applied == 302 and Resource.objects.count() == 300 and len(relayed()) == 302
    if mode == "batch":  # whatever the page's size (COPY statements are not captured here)
        statements = [q["sql"] for q in queries.captured_queries]
        assert len(statements) < 40, statements


def test_a_crash_before_the_page_commits_leaves_nothing(peer, monkeypatch):
    site_id = provider_and_site(peer)
    ucri = identifiers.mint(GZ01)
    peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)

    write_many, crashing = outbox.write_many, [True]

    def crash(*args, **kwargs):  # the page's rows are written; the relay fails before the commit
        if crashing:
            raise DatabaseError("the server went away")
        return write_many(*args, **kwargs)

    monkeypatch.setattr(outbox, "write_many", crash)
    report = pull(peer)
    assert report.error and report.error.startswith("internal_error")
    assert (Resource.objects.count(), Site.objects.count(), Provider.objects.count(), OutboxEntry.objects.count()) \
        == (0, 0, 0, 0)
    assert Peer.objects.get(entity_id=peer.url).cursor == 0
    crashing.clear()
    assert pull(peer).applied == 3
    assert seqs() == [1, 2, 3]


def test_pages_fetched_ahead_follow_the_cursor(peer):
    """The next page is fetched while one is applied; it is the one asked for, and a failure fetching
    it fails the pull after the pages already committed, like any failed fetch."""
    site_id = provider_and_site(peer)

    def add_resources(n: int) -> None:
        for _ in range(n):
            ucri = identifiers.mint(GZ01)
            peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)

    def asked_after() -> list[int]:
        return [int(p.split("after=")[1].split("&")[0]) for p in peer.requests_seen
                if p.startswith("/federation/changes")]

    add_resources(5)
    report = pull(peer, page_size=2)
    assert (report.applied, report.pages, report.error) == (7, 4, None)
    assert asked_after() == [0, 2, 4, 6]
    assert seqs() == list(range(1, 8))

    add_resources(4)  # seq 8..11
    peer.page_override = lambda after, limit: (500, "text/plain", b"boom") if after >= 9 else peer.page(after, limit)
    report = pull(peer, page_size=2)
    assert report.applied == 2 and report.error.startswith("http_error")
    assert Peer.objects.get(entity_id=peer.url).cursor == 9
    peer.page_override = None
    peer.requests_seen.clear()
    report = pull(peer, page_size=2, max_pages=1)
    assert (report.applied, report.pages) == (2, 1)
    assert asked_after() == [9]  # nothing fetched ahead of the last page it may take
    assert Peer.objects.get(entity_id=peer.url).cursor == 11 and seqs() == list(range(1, 12))


def test_a_forged_page_fetched_ahead_is_refused_when_its_turn_comes(peer):
    from identity import crypto

    site_id = provider_and_site(peer)
    for _ in range(3):
        ucri = identifiers.mint(GZ01)
        peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)
    impostor = crypto.generate_private_key()
    peer.page_override = lambda after, limit: peer.page(after, limit, key=impostor if after >= 2 else None)
    report = pull(peer, page_size=2)
    assert (report.applied, report.pages) == (2, 1)
    assert report.error.startswith("page_invalid_signature") or report.error.startswith("page_unknown_key")
    assert violations(peer) == [(None, report.error.split(":")[0])]
    assert Peer.objects.get(entity_id=peer.url).cursor == 2 and seqs() == [1, 2]


def test_availability_in_a_page(peer):
    from registry.models import Availability

    site_id = provider_and_site(peer)
    first, second = identifiers.mint(GZ01), identifiers.mint(GZ01)
    for ucri in (first, second):
        peer.add("resource", ucri, resource_record(ucri, GZ01, site_id), version=1)
    now = timezone.now().replace(microsecond=0)

    def report(ucri: str, seconds_ago: int, units: int, **overrides) -> None:
        record = {"ucri": ucri, "available_units": units, "queued_jobs": 0, "valid_for": 60,
                  "observed_at": timestamp(now - timezone.timedelta(seconds=seconds_ago)), **overrides}
        peer.add("availability", ucri, record)

    report(first, 30, 1)  # 5 applied
    report(first, 10, 2)  # 6 newer: applied
    report(first, 20, 3)  # 7 older than what the page already holds: stale
    report(second, 10, 4)  # 8 applied
    report(identifiers.mint(GZ01), 10, 5)  # 9 not mirrored
    report(second, 5, -1)  # 10 invalid
    result = pull(peer)
    assert (result.applied, result.stale, result.violations) == (4 + 3, 1, 2)
    assert violations(peer) == [(9, "unknown_reference"), (10, "invalid_record")]
    ten_ago = now - timezone.timedelta(seconds=10)
    held = {a.resource.ucri: (a.available_units, a.observed_at)
            for a in Availability.objects.select_related("resource")}
    assert held == {first: (2, ten_ago), second: (4, ten_ago)}
    assert [t for t, *_ in relayed()] == ["provider", "site", "resource", "resource"]  # our feed publishes its own

    report(second, 1, 7)  # a later page: newer than held
    report(first, 40, 9)  # older than held
    result = pull(peer)
    assert (result.applied, result.stale) == (1, 1)
    assert Availability.objects.get(resource__ucri=second).available_units == 7
    assert Availability.objects.get(resource__ucri=first).available_units == 2
