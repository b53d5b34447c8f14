"""The change-feed consumer against a scriptable peer over real HTTP: what a good page does, and
every way a peer can be down, broken or lying (CONTRACT §8). Nothing invalid lands in the catalog."""

from __future__ import annotations

import time
import uuid

import pytest
from django.utils import timezone

from core.errors import ApplicationError
from core.models import OutboxEntry
from federation import services, sync
from federation.models import Peer, Violation
from registry import identifiers
from registry.models import Provider, Resource, Site
from registry.records import timestamp
from tests.support import factories
from tests.support.fakepeer import FakePeer

pytestmark = pytest.mark.django_db(transaction=True)
NATIONAL = "http://127.0.0.1:8000"


def provider_record(prefix: str, version: int = 1, **overrides) -> dict:
    record = {"prefix": prefix, "name": f"Mirror {prefix}", "uscc": factories.valid_uscc(), "status": "active",
              "credential": None, "credential_status": None, "credential_expires_at": None,
              "version": version, "updated_at": timestamp(timezone.now())}
    record.update(overrides)
    return record


def site_record(site_id: str, prefix: str, version: int = 1, **overrides) -> dict:
    record = {"id": site_id, "version": version, "name": f"Site {site_id[:4]}", "province": "52", "hub": "gz",
              "pue": 1.2, "wue": None, "cue": None, "green_ratio": 0.5, "rack_availability": 0.5,
              "provider": prefix, "updated_at": timestamp(timezone.now())}
    record.update(overrides)
    return record


def resource_record(ucri: str, prefix: str, site_id: str, version: int = 1, status: str = "active",
                    **overrides) -> dict:
    now = timestamp(timezone.now())
    record = {"ucri": ucri, "provider": prefix, "status": status, "version": version, "created_at": now,
              "updated_at": now, "retired_at": now if status == "retired" else None, "local_id": f"l-{ucri[-6:]}",
              "name": "Mirrored pool", "kind": "intelligent", "site_id": site_id, "accelerator": "GPU",
              "accelerator_model": "A100 SXM 80GB", "accelerator_count": 8, "node_count": 1, "fp64_tflops": None,
              "fp32_tflops": None, "fp16_tflops": 2496.0, "int8_tops": None, "memory_gb": 640.0, "storage_tb": None,
              "price_per_hour": 8.5, "price_unit": "card", "price_per_million_tokens": None,
              "endpoints": [{"type": "slurm", "url": "https://slurm.gz.example/x"}]}
    record.update(overrides)
    return record


@pytest.fixture
def node():
    return factories.node(role="national", code=None, entity_id=NATIONAL)


@pytest.fixture
def peer_gz(node):
    fake = FakePeer(prefixes=["86.52"], authority_hints=[NATIONAL])
    services.subordinate_add(entity_id=fake.url, prefix="86.52", actor="test")
    yield fake
    fake.close()


def catalog(fake: FakePeer, prefix: str = "86.52.GZ01") -> tuple[str, str]:
    """Provider, site and resource changes on the fake peer; returns (ucri, site_id)."""
    site_id = str(uuid.uuid4())
    ucri = identifiers.mint(prefix)
    fake.add("provider", prefix, provider_record(prefix), version=1)
    fake.add("site", site_id, site_record(site_id, prefix), version=1)
    fake.add("resource", ucri, resource_record(ucri, prefix, site_id), version=1)
    return ucri, site_id


def pull(fake: FakePeer) -> sync.PullReport:
    return sync.pull(Peer.objects.get(entity_id=fake.url))


def reasons(fake: FakePeer) -> list[str]:
    return list(Violation.objects.filter(peer__entity_id=fake.url).values_list("reason", flat=True))


def test_a_good_page_is_applied_relayed_and_resolvable(api, peer_gz):
    ucri, _ = catalog(peer_gz)
    report = pull(peer_gz)
    assert (report.applied, report.violations, report.error) == (3, 0, None)
    peer = Peer.objects.get(entity_id=peer_gz.url)
    assert peer.cursor == 3 and peer.epoch == peer_gz.epoch
    record = api.get(f"/api/v1/resolve/{ucri}").json()
    assert record["source"] == "mirror" and record["synced_at"] and record["authority"] == peer_gz.url
    relayed = OutboxEntry.objects.filter(key=ucri).get()
    assert relayed.authority == peer_gz.url  # our feed carries it on to our superior
    assert pull(peer_gz).applied == 0  # nothing new


def test_higher_version_wins_and_retirement_is_final(api, peer_gz):
    ucri, site_id = catalog(peer_gz)
    peer_gz.add("resource", ucri, resource_record(ucri, "86.52.GZ01", site_id, version=3, name="v3"), version=3)
    peer_gz.add("resource", ucri, resource_record(ucri, "86.52.GZ01", site_id, version=2, name="v2"), version=2)
    report = pull(peer_gz)
    assert report.stale == 1
    assert Resource.objects.get(ucri=ucri).name == "v3"
    peer_gz.add("resource", ucri, resource_record(ucri, "86.52.GZ01", site_id, version=4, status="retired"),
                op="retire", version=4)
    peer_gz.add("resource", ucri, resource_record(ucri, "86.52.GZ01", site_id, version=5, name="revived"), version=5)
    pull(peer_gz)
    assert api.get(f"/api/v1/resolve/{ucri}").status_code == 410
    assert Resource.objects.get(ucri=ucri).version == 4


def test_replaying_pages_and_a_new_epoch_change_nothing(peer_gz):
    catalog(peer_gz)
    pull(peer_gz)
    counts = (Resource.objects.count(), Site.objects.count(), Provider.objects.count(), OutboxEntry.objects.count())
    Peer.objects.filter(entity_id=peer_gz.url).update(cursor=0)
    assert pull(peer_gz).stale == 3
    peer_gz.epoch = uuid.uuid4().hex  # the origin restored from a backup
    report = pull(peer_gz)
    assert report.stale == 3 and report.applied == 0
    assert Peer.objects.get(entity_id=peer_gz.url).epoch == peer_gz.epoch
    assert counts == (Resource.objects.count(), Site.objects.count(), Provider.objects.count(),
                      OutboxEntry.objects.count())


def test_unknown_entry_types_are_skipped_and_counted(peer_gz):
    catalog(peer_gz)
    peer_gz.add("quantum-annealer", "86.52.GZ01/x", {"whatever": 1}, version=1)
    report = pull(peer_gz)
    assert report.skipped_unknown == 1 and report.violations == 0 and report.applied == 3
    assert Peer.objects.get(entity_id=peer_gz.url).cursor == 4


def test_a_record_outside_the_origins_prefixes_is_refused(node, peer_gz):
    foreign = factories.provider(code="OWN")  # our own provider: 86.OWN is not 86.52's to change
    catalog(peer_gz)
    peer_gz.add("provider", "86.11.BJ01", provider_record("86.11.BJ01"), version=1)
    peer_gz.add("provider", foreign.prefix, provider_record(foreign.prefix, version=9), version=9)
    report = pull(peer_gz)
    assert report.applied == 3 and report.violations == 2
    assert reasons(peer_gz) == ["outside_delegation", "outside_delegation"]
    assert not Provider.objects.filter(prefix="86.11.BJ01").exists()
    assert Provider.objects.get(prefix=foreign.prefix).version == 1


@pytest.mark.parametrize("mutation", ["unknown_key", "sibling_key", "sibling_issuer", "wrong_typ", "truncated",
                                      "non_monotonic", "next_mismatch", "wrong_after", "not_json_claims",
                                      "wrong_content_type", "http_500", "expired"])
def test_broken_or_forged_pages_change_nothing(node, peer_gz, mutation):
    sibling = FakePeer(prefixes=["86.11"], authority_hints=[NATIONAL])
    services.subordinate_add(entity_id=sibling.url, prefix="86.11", actor="test")
    catalog(peer_gz)

    def page(after: int, limit: int):
        claims = peer_gz.page_claims(after, limit)
        if mutation == "unknown_key":
            return peer_gz.page(after, limit, key=factories_key())
        if mutation == "sibling_key":
            return 200, "application/change-page+jwt", sibling.sign(claims, "change-page+jwt").encode()
        if mutation == "sibling_issuer":
            return 200, "application/change-page+jwt", sibling.sign({**claims, "iss": sibling.url},
                                                                    "change-page+jwt").encode()
        if mutation == "wrong_typ":
            return peer_gz.page(after, limit, typ="entity-statement+jwt")
        if mutation == "truncated":
            status, content_type, body = peer_gz.page(after, limit)
            return status, content_type, body[: len(body) // 2]
        if mutation == "non_monotonic":
            claims["changes"] = [claims["changes"][1], claims["changes"][0], claims["changes"][2]]
        if mutation == "next_mismatch":
            claims["next"] = 99
        if mutation == "wrong_after":
            claims["after"] = after + 7
        if mutation == "not_json_claims":
            claims["changes"] = "lots"
        if mutation == "wrong_content_type":
            return 200, "application/json", peer_gz.sign(claims, "change-page+jwt").encode()
        if mutation == "http_500":
            return 500, "text/plain", b"boom"
        if mutation == "expired":
            claims["iat"], claims["exp"] = int(time.time()) - 4000, int(time.time()) - 400
        return 200, "application/change-page+jwt", peer_gz.sign(claims, "change-page+jwt").encode()

    peer_gz.page_override = page
    before = (Resource.objects.count(), Site.objects.count(), Provider.objects.count(), OutboxEntry.objects.count())
    report = pull(peer_gz)
    assert report.error and report.applied == 0
    state = Peer.objects.get(entity_id=peer_gz.url)
    assert state.cursor == 0 and state.last_error and state.consecutive_failures == 1
    # A peer that fails (HTTP 500) is an error; one that lies is also a violation.
    assert len(reasons(peer_gz)) == (0 if mutation == "http_500" else 1)
    assert before == (Resource.objects.count(), Site.objects.count(), Provider.objects.count(),
                      OutboxEntry.objects.count())
    sibling.close()
    # Once the peer behaves, the same pull applies everything.
    peer_gz.page_override = None
    assert pull(peer_gz).applied == 3
    assert Peer.objects.get(entity_id=peer_gz.url).consecutive_failures == 0


def factories_key():
    from identity import crypto

    return crypto.generate_private_key()


def test_an_oversized_page_is_refused_without_reading_it_all(node, peer_gz):
    catalog(peer_gz)
    peer_gz.page_override = lambda after, limit: (200, "application/change-page+jwt", b"a" * (17 * 1024 * 1024))
    report = pull(peer_gz)
    assert report.error.startswith("oversized")
    assert Resource.objects.count() == 0


def test_a_subordinate_that_is_down_then_back(node, peer_gz):
    ucri, _ = catalog(peer_gz)
    peer_gz.down = True
    report = pull(peer_gz)
    assert report.error and "unreachable" in report.error
    assert reasons(peer_gz) == []  # being down is not lying
    assert Peer.objects.get(entity_id=peer_gz.url).cursor == 0
    peer_gz.down = False
    assert pull(peer_gz).applied == 3
    assert Resource.objects.filter(ucri=ucri).exists()


def test_malformed_entries_and_bad_records_are_violations_not_failures(node, peer_gz):
    _, site_id = catalog(peer_gz)
    bad_ucri = identifiers.mint("86.52.GZ01")
    peer_gz.changes.append({"seq": 4, "type": "resource", "op": "explode", "key": bad_ucri, "authority": "x",
                            "record": {}})
    peer_gz.add("resource", bad_ucri, resource_record(bad_ucri, "86.52.GZ01", site_id, accelerator="TPU"), version=1)
    peer_gz.add("resource", bad_ucri.lower(), resource_record(bad_ucri, "86.52.GZ01", site_id), version=1)
    peer_gz.add("resource", bad_ucri, resource_record(bad_ucri, "86.52.GZ01", str(uuid.uuid4())), version=1)
    peer_gz.add("site", site_id, site_record(site_id, "86.52.GZ01", version=2, hub="jjj"), version=2)
    peer_gz.add("resource", bad_ucri, resource_record(bad_ucri, "86.52.GZ01", site_id, version=2), version=1)
    report = pull(peer_gz)
    assert report.applied == 3 and report.violations == 6
    assert set(reasons(peer_gz)) == {"malformed_entry", "invalid_record", "invalid_key", "unknown_reference"}
    assert not Resource.objects.filter(ucri=bad_ucri).exists()
    assert Site.objects.get(pk=site_id).hub == "gz"


def test_a_peer_declaring_prefixes_outside_its_delegation_is_refused(node, peer_gz):
    catalog(peer_gz)
    peer_gz.prefixes = ["86.52", "86.11"]
    Peer.objects.filter(entity_id=peer_gz.url).update(configuration_expires_at=None)
    report = pull(peer_gz)
    assert report.error.startswith("policy_violation")
    assert Resource.objects.count() == 0


def test_enrollment_refuses_a_prefix_outside_the_delegation(node):
    fake = FakePeer(prefixes=["86.11"], authority_hints=[NATIONAL])
    with pytest.raises(ApplicationError) as excinfo:
        services.subordinate_add(entity_id=fake.url, prefix="86.52", actor="test")
    assert excinfo.value.code == "prefix_mismatch"
    fake.close()


def test_key_rollover_is_followed_from_a_configuration_signed_by_a_pinned_key(node, peer_gz):
    from identity import crypto

    catalog(peer_gz)
    new_key = crypto.generate_private_key()
    old_key = peer_gz.key

    def configuration():
        claims = peer_gz.configuration_claims()
        claims["jwks"] = {"keys": [crypto.public_jwk(old_key), crypto.public_jwk(new_key)]}
        return 200, "application/entity-statement+jwt", peer_gz.sign(claims, "entity-statement+jwt", old_key).encode()

    peer_gz.configuration_override = configuration
    Peer.objects.filter(entity_id=peer_gz.url).update(configuration_expires_at=None)
    peer_gz.page_override = lambda after, limit: peer_gz.page(after, limit, key=new_key)
    assert pull(peer_gz).applied == 3
    assert {k["kid"] for k in Peer.objects.get(entity_id=peer_gz.url).jwks} == {
        crypto.public_jwk(old_key)["kid"], crypto.public_jwk(new_key)["kid"]}


def test_a_configuration_signed_by_an_unpinned_key_is_refused(node, peer_gz):
    from identity import crypto

    catalog(peer_gz)
    impostor = crypto.generate_private_key()
    peer_gz.configuration_override = lambda: (200, "application/entity-statement+jwt", peer_gz.sign(
        {**peer_gz.configuration_claims(), "jwks": {"keys": [crypto.public_jwk(impostor)]}}, "entity-statement+jwt",
        impostor).encode())
    Peer.objects.filter(entity_id=peer_gz.url).update(configuration_expires_at=None)
    report = pull(peer_gz)
    assert report.error
    assert Resource.objects.count() == 0


def test_violations_are_visible_in_the_admin(client, peer_gz):
    from django.contrib.auth import get_user_model

    peer_gz.add("provider", "86.11.X", provider_record("86.11.X"), version=1)
    pull(peer_gz)
    admin = get_user_model().objects.create_superuser("root", "root@example.cn", "pw-long-enough-123")
    client.force_login(admin)
    violations = client.get("/admin/federation/violation/")
    assert violations.status_code == 200 and "outside_delegation" in violations.content.decode()
    peers = client.get("/admin/federation/peer/")
    assert peers.status_code == 200 and peer_gz.url in peers.content.decode()


def test_fractional_prices_arrive_exactly(api, peer_gz):
    """A JSON number such as 0.123 is a float in Python; converting it with the float's binary expansion
    would refuse it (more than 4 decimal places). Found by the crash test on a demo catalog."""
    ucri, site_id = catalog(peer_gz)
    peer_gz.add("resource", ucri, resource_record(ucri, "86.52.GZ01", site_id, version=2, price_per_hour=0.123,
                                                  price_per_million_tokens=1.37), version=2)
    report = pull(peer_gz)
    assert report.violations == 0, reasons(peer_gz)
    record = api.get(f"/api/v1/resolve/{ucri}").json()
    assert (record["price_per_hour"], record["price_per_million_tokens"]) == (0.123, 1.37)


# Regressions from review: each of these crashed, looped, hung or let a lie through ----------------

def test_a_colliding_local_id_is_a_violation_not_a_crashed_pull(peer_gz):
    ucri, site_id = catalog(peer_gz)
    twin = identifiers.mint("86.52.GZ01")
    peer_gz.add("resource", twin, resource_record(twin, "86.52.GZ01", site_id, local_id=f"l-{ucri[-6:]}"), version=1)
    report = pull(peer_gz)
    assert (report.applied, report.error) == (3, None)
    assert reasons(peer_gz) == ["conflict"]
    assert Peer.objects.get(entity_id=peer_gz.url).cursor == 4


@pytest.mark.parametrize("mutation", ["huge_seq", "empty_has_more", "too_many"])
def test_pages_that_would_overflow_or_loop(peer_gz, mutation):
    catalog(peer_gz)

    def page(after, limit):
        claims = peer_gz.page_claims(after, limit)
        if mutation == "huge_seq":
            claims["changes"][-1]["seq"] = claims["next"] = 2**63
        elif mutation == "empty_has_more":
            claims.update(changes=[], next=after, has_more=True)
        else:
            claims["changes"] = [{**c, "seq": n} for n, c in enumerate(claims["changes"] * 400, start=1)]
            claims["next"] = len(claims["changes"])
        return 200, "application/change-page+jwt", peer_gz.sign(claims, "change-page+jwt").encode()

    peer_gz.page_override = page
    report = sync.pull(Peer.objects.get(entity_id=peer_gz.url), page_size=500)
    assert report.error and report.error.startswith("malformed_page")
    assert Resource.objects.count() == 0


def test_an_epoch_that_keeps_changing_stops_the_pull(peer_gz):
    catalog(peer_gz)
    pull(peer_gz)

    def page(after, limit):
        peer_gz.epoch = uuid.uuid4().hex
        return peer_gz.page(after, limit)

    peer_gz.page_override = page
    report = pull(peer_gz)
    assert report.error.startswith("epoch_unstable")
    assert len(peer_gz.requests_seen) < 20


def test_a_relayed_change_must_name_a_real_authority(peer_gz):
    ucri, site_id = catalog(peer_gz)
    forged = identifiers.mint("86.52.GZ01")
    peer_gz.add("resource", forged, resource_record(forged, "86.52.GZ01", site_id), version=1,
                authority="http://127.0.0.1:9/not-a-node")
    peer_gz.add("resource", ucri, resource_record(ucri, "86.52.GZ01", site_id, version=2, authority="elsewhere"),
                version=2)
    report = pull(peer_gz)
    assert report.applied == 3 and reasons(peer_gz) == ["invalid_authority", "invalid_authority"]
    assert not Resource.objects.filter(ucri=forged).exists()


def test_a_deleted_downtime_never_comes_back(peer_gz):
    ucri, _ = catalog(peer_gz)
    downtime_id = str(uuid.uuid4())
    now = timezone.now()
    record = {"id": downtime_id, "version": 1, "resource": ucri, "site_id": None, "provider": "86.52.GZ01",
              "start": timestamp(now + timezone.timedelta(days=1)), "end": timestamp(now + timezone.timedelta(days=2)),
              "classification": "scheduled", "reason": "maintenance"}
    peer_gz.add("downtime", downtime_id, record, version=1)
    peer_gz.add("downtime", downtime_id, {**record, "version": 2}, op="retire", version=2)
    peer_gz.add("downtime", downtime_id, record, version=1)  # a replay of the old upsert
    report = pull(peer_gz)
    assert report.violations == 0
    from registry.models import Downtime

    assert not Downtime.objects.filter(pk=downtime_id).exists()


def test_revocation_stays_final_on_mirrors(peer_gz):
    catalog(peer_gz)
    peer_gz.add("provider", "86.52.GZ01", provider_record("86.52.GZ01", version=2, status="revoked"), version=2)
    peer_gz.add("provider", "86.52.GZ01", provider_record("86.52.GZ01", version=3), version=3)
    pull(peer_gz)
    assert Provider.objects.get(prefix="86.52.GZ01").status == "revoked"
    assert reasons(peer_gz) == ["revocation_is_final"]


def test_an_oversized_record_is_refused(peer_gz):
    ucri, site_id = catalog(peer_gz)
    peer_gz.add("resource", ucri, resource_record(ucri, "86.52.GZ01", site_id, version=2, padding="x" * 70000),
                version=2)
    pull(peer_gz)
    assert reasons(peer_gz) == ["oversized_record"]
    assert Resource.objects.get(ucri=ucri).version == 1


def test_a_rejected_token_is_renewed_once(peer_gz):
    catalog(peer_gz)
    calls = {"n": 0}

    def page(after, limit):
        calls["n"] += 1
        if calls["n"] == 1:
            return 401, "application/json", b'{"error": "invalid_token"}'
        return peer_gz.page(after, limit)

    peer_gz.page_override = page
    report = pull(peer_gz)
    assert report.applied == 3 and report.error is None


def test_the_applied_counter_counts_each_change_once(peer_gz):
    catalog(peer_gz)
    catalog(peer_gz, prefix="86.52.GZ02")
    sync.pull(Peer.objects.get(entity_id=peer_gz.url), page_size=2)
    assert Peer.objects.get(entity_id=peer_gz.url).applied == 6


def test_status_list_inflation_is_capped():
    import zlib

    from federation import status
    from identity import tokens

    bomb = crypto_b64url(zlib.compress(b"\0" * (status.MAX_LIST_BYTES + 10), 9))
    with pytest.raises(tokens.TokenError):
        status.inflate(bomb)
    assert status.inflate(crypto_b64url(zlib.compress(b"\1\2", 9))) == b"\1\2"


def crypto_b64url(data: bytes) -> str:
    from identity import crypto

    return crypto.b64url(data)
