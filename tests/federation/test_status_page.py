"""The operators' federation status page: each peer's trust chain, cursor lag, last sync and violations,
this node's own facts, and who may see it. The page reads local state only: every test forbids calls
to other nodes."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from federation import chains, clients, services, trust
from federation.models import Peer, TrustAnchor, Violation
from federation.overview import chain_state
from registry.models import ProviderMembership
from registry.selectors import OPERATOR_GROUP
from tests.support import factories
from tests.support.fakepeer import FakePeer

pytestmark = pytest.mark.django_db
NATIONAL = "http://127.0.0.1:8000"
URL = "/federation-status"


def forbid_network(monkeypatch) -> None:
    """The page must never call a peer; any attempt fails the test loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"the status page called another node: {args!r}")

    for name in ("entity_configuration", "subordinate_statement", "fetch_jwt", "change_page", "access_token"):
        monkeypatch.setattr(clients, name, refuse)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    forbid_network(monkeypatch)


def make_user(username: str, *, provider=None, operator: bool = False):
    user = get_user_model().objects.create_user(username, is_staff=True)
    if provider is not None:
        ProviderMembership.objects.create(user=user, provider=provider)
    if operator:
        user.groups.add(Group.objects.get(name=OPERATOR_GROUP))
    return user


@pytest.fixture
def national(db):
    return factories.node(role="national", code=None, entity_id=NATIONAL)


@pytest.fixture
def operator_client(client, db):
    client.force_login(make_user("olga", operator=True))
    return client


def peer_section(body: str, entity_id: str) -> str:
    start = body.index(f'data-testid="federation-peer" data-entity-id="{entity_id}"')
    end = body.find('data-testid="federation-peer"', start + 10)
    return body[start:end if end != -1 else len(body)]


def cell(section: str, testid: str) -> str:
    match = re.search(rf'<td data-testid="{testid}"([^>]*)>(.*?)</td>', section, re.S)
    assert match, testid
    return match.group(1) + match.group(2)


def attribute(fragment: str, name: str) -> str | None:
    match = re.search(rf'{name}="([^"]*)"', fragment)
    return match.group(1) if match else None


def add_violations(peer: Peer, count: int, now: dt.datetime) -> list[Violation]:
    made = []
    for i in range(count):
        violation = Violation.objects.create(peer=peer, seq=100 + i, type="resource", key=f"86.11.X/KEY{i}",
                                             reason=f"reason_{i}", detail=f"detail {i}")
        Violation.objects.filter(pk=violation.pk).update(created_at=now - dt.timedelta(minutes=count - i))
        made.append(violation)
    return made


# Who may see it ---------------------------------------------------------------------------------------

def test_anonymous_people_are_sent_to_sign_in(client, national):
    response = client.get(URL)
    assert response.status_code == 302
    location = urlsplit(response["Location"])
    assert location.path == "/admin/login/" and dict(parse_qsl(location.query)) == {"next": URL}


def test_provider_staff_and_plain_staff_are_refused(client, national):
    Peer.objects.create(entity_id="http://127.0.0.1:8052", relation="subordinate", prefixes=["86.52"])
    provider = factories.provider(code="GZ01")
    for user in (make_user("alice", provider=provider), make_user("bob")):
        client.force_login(user)
        response = client.get(URL)
        assert response.status_code == 403
        body = response.content.decode()
        assert 'data-testid="federation-denied"' in body and "http://127.0.0.1:8052" not in body


def test_operators_and_superusers_see_it(client, national):
    for user in (make_user("olga", operator=True),
                 get_user_model().objects.create_superuser("root", "root@example.cn", "pw-long-enough-123")):
        client.force_login(user)
        response = client.get(URL)
        assert response.status_code == 200
        assert 'data-testid="federation-no-peers"' in response.content.decode()


# What it shows ----------------------------------------------------------------------------------------

def test_lag_last_sync_and_violations_per_peer(operator_client, national):
    now = timezone.now()
    synced = Peer.objects.create(entity_id="http://127.0.0.1:8052", relation="subordinate", prefixes=["86.52"],
                                 epoch="e" * 32, cursor=120, origin_head=150, applied=118, stale=2,
                                 last_pull_at=now - dt.timedelta(seconds=30),
                                 last_success_at=now - dt.timedelta(seconds=90), violations=7)
    made = add_violations(synced, 7, now)
    quiet = Peer.objects.create(entity_id="http://127.0.0.1:8011", relation="subordinate", prefixes=["86.11"],
                                cursor=40, origin_head=40, last_success_at=now - dt.timedelta(seconds=5))

    body = operator_client.get(URL).content.decode()
    section = peer_section(body, synced.entity_id)
    lag = cell(section, "peer-lag")
    assert attribute(lag, "data-lag") == "30"  # origin_head 150 - cursor 120
    assert "30 changes behind (read up to seq 120 of 150)" in lag
    assert 90 <= int(attribute(lag, "data-seconds-since-success")) <= 95
    violations = cell(section, "peer-violations")
    assert attribute(violations, "data-count") == "7" and "7 changes refused" in violations
    shown = re.findall(r'data-testid="peer-violation" data-reason="([^"]+)"', violations)
    assert shown == [v.reason for v in reversed(made)][:5]  # the newest five, newest first
    assert "86.11.X/KEY6" in violations and "86.11.X/KEY1" not in violations
    last_sync = cell(section, "peer-last-sync")
    assert "Last success" in last_sync and "118 applied, 2 already held" in last_sync
    assert attribute(section, "data-health") == "ok"

    quiet_section = peer_section(body, quiet.entity_id)
    assert attribute(cell(quiet_section, "peer-lag"), "data-lag") == "0"
    assert attribute(cell(quiet_section, "peer-violations"), "data-count") == "0"
    assert 'data-testid="peer-violation"' not in quiet_section


def test_chain_states_without_calling_peers(operator_client, national):
    now = timezone.now()
    expires = now + dt.timedelta(hours=6)
    unresolved = Peer.objects.create(entity_id="http://127.0.0.1:8053", relation="subordinate",
                                     prefixes=["86.53"], configuration_expires_at=expires)
    refused = Peer.objects.create(
        entity_id="http://127.0.0.1:8054", relation="subordinate", prefixes=["86.54"], consecutive_failures=2,
        last_pull_at=now, last_error="invalid_signature: statement 0: the signature does not verify",
        configuration_expires_at=expires, violations=2)
    down = Peer.objects.create(entity_id="http://127.0.0.1:8055", relation="subordinate", prefixes=["86.55"],
                               consecutive_failures=3, last_pull_at=now,
                               last_error="unreachable: http://127.0.0.1:8055/.well-known/openid-federation")
    body = operator_client.get(URL).content.decode()

    chain = cell(peer_section(body, unresolved.entity_id), "peer-chain")
    assert attribute(chain, "data-state") == "unknown" and "not yet resolved" in chain
    assert expires.strftime("%Y-%m-%d %H:%M:%S") in chain  # the configuration's expiry instead

    section = peer_section(body, refused.entity_id)
    chain = cell(section, "peer-chain")
    assert attribute(chain, "data-state") == "invalid" and 'data-testid="peer-chain-reason">invalid_signature<' in chain
    assert attribute(section, "data-health") == "failing"
    assert attribute(cell(section, "peer-last-sync"), 'data-count') == "2"  # failed pulls in a row

    section = peer_section(body, down.entity_id)
    assert attribute(cell(section, "peer-chain"), "data-state") == "unknown"  # down is not untrustworthy
    assert attribute(section, "data-health") == "failing" and "unreachable" in cell(section, "peer-last-sync")


def test_a_verified_chain_shows_valid_with_its_earliest_expiry(client, national, monkeypatch):
    """A real chain built over HTTP (as sync and the background refresh do), then the peer goes away:
    the page still shows the chain from the cache, without calling anyone."""
    monkeypatch.undo()  # this test builds the chain over real HTTP first
    fake = FakePeer(prefixes=["86.52"], authority_hints=[NATIONAL])
    try:
        services.subordinate_add(entity_id=fake.url, prefix="86.52", actor="test")
        built = chains.chain_for(fake.url)
    finally:
        fake.close()
    forbid_network(monkeypatch)
    client.force_login(make_user("olga", operator=True))
    section = peer_section(client.get(URL).content.decode(), fake.url)
    chain = cell(section, "peer-chain")
    assert attribute(chain, "data-state") == "valid"
    expiry = dt.datetime.fromtimestamp(built.expires_at, tz=dt.UTC)
    assert built.expires_at == min(s["exp"] for s in built.statements)
    assert attribute(chain, "data-expires-at") == expiry.isoformat()
    assert f"3 statements up to the anchor {NATIONAL}" in chain


def test_an_expired_cached_chain_and_a_failure_that_wins_over_the_cache(national):
    now = timezone.now()
    peer = Peer.objects.create(entity_id="http://127.0.0.1:8056", relation="subordinate", prefixes=["86.56"])
    old = trust.TrustChain(subject=peer.entity_id, anchor=NATIONAL, statements=({}, {}, {}), metadata={}, policy={},
                           jwks_by_entity={}, expires_at=int((now - dt.timedelta(minutes=1)).timestamp()))
    assert chain_state(peer, old, now).state == "expired"
    fresh = trust.TrustChain(subject=peer.entity_id, anchor=NATIONAL, statements=({}, {}, {}), metadata={},
                             policy={}, jwks_by_entity={}, expires_at=int((now + dt.timedelta(hours=1)).timestamp()))
    assert chain_state(peer, fresh, now).state == "valid"
    peer.consecutive_failures, peer.last_error = 1, "untrusted_anchor: no pinned anchor"
    assert chain_state(peer, fresh, now).state == "invalid"  # the newest verdict wins
    peer.last_error = "page_invalid_signature: a forged page"
    assert chain_state(peer, fresh, now).state == "valid"  # a broken page is not a broken chain


def test_this_nodes_facts_superior_and_anchors(client, db):
    factories.node(role="provincial", code="52", entity_id="http://127.0.0.1:8052")
    anchor_key = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                  "kid": "anchor-key-1"}
    TrustAnchor.objects.create(entity_id=NATIONAL, jwks=[anchor_key])
    now = timezone.now()
    superior = Peer.objects.create(entity_id=NATIONAL, relation="superior", notified_seq=42,
                                   configuration_expires_at=now + dt.timedelta(hours=1))
    cache.set(chains.CACHE_PREFIX + NATIONAL, trust.TrustChain(
        subject=NATIONAL, anchor=NATIONAL, statements=({},), metadata={}, policy={}, jwks_by_entity={},
        expires_at=int((now + dt.timedelta(minutes=50)).timestamp())), timeout=600)
    client.force_login(make_user("olga", operator=True))
    body = client.get(URL).content.decode()
    assert re.search(r'data-testid="node-entity-id">http://127.0.0.1:8052<', body)
    assert re.search(r'data-testid="node-prefix">86.52<', body)
    assert re.search(r'data-testid="node-role">\s*provincial', body, re.I)
    superior_cell = re.search(r'data-testid="node-superior">(.*?)</td>', body, re.S).group(1)
    assert NATIONAL in superior_cell
    assert f'data-testid="trust-anchor" data-entity-id="{NATIONAL}"' in body and "1 pinned key" in body
    section = peer_section(body, superior.entity_id)
    assert attribute(section, "data-relation") == "superior"
    lag = cell(section, "peer-lag")
    assert attribute(lag, "data-lag") is None and "last announced seq 42" in lag
    assert attribute(cell(section, "peer-chain"), "data-state") == "valid"


def test_a_node_without_a_superior_says_it_anchors_its_chains(operator_client, national):
    body = operator_client.get(URL).content.decode()
    assert "this node is a trust anchor" in re.search(r'data-testid="node-superior">(.*?)</td>', body, re.S).group(1)


def test_queries_do_not_grow_with_peers_or_violations(operator_client, national):
    now = timezone.now()

    def add(port: int) -> None:
        peer = Peer.objects.create(entity_id=f"http://127.0.0.1:{port}", relation="subordinate",
                                   prefixes=[f"86.{port - 8000}"], cursor=1, origin_head=9)
        add_violations(peer, 3, now)

    add(8041)
    add(8042)
    with CaptureQueriesContext(connection) as few:
        assert operator_client.get(URL).status_code == 200
    for port in range(8043, 8049):
        add(port)
    with CaptureQueriesContext(connection) as many:
        body = operator_client.get(URL).content.decode()
    assert body.count('data-testid="federation-peer"') == 8
    assert body.count('data-testid="peer-violation"') == 8 * 3
    assert len(many.captured_queries) == len(few.captured_queries)


def test_the_page_renders_in_chinese(operator_client, national):
    Peer.objects.create(entity_id="http://127.0.0.1:8052", relation="subordinate", prefixes=["86.52"],
                        cursor=3, origin_head=5)
    response = operator_client.get(URL, HTTP_ACCEPT_LANGUAGE="zh-hans")
    body = response.content.decode()
    assert response.status_code == 200 and '<html lang="zh-hans">' in body
    assert attribute(cell(peer_section(body, "http://127.0.0.1:8052"), "peer-lag"), "data-lag") == "2"


def test_a_superior_whose_chain_fails_to_refresh_shows_invalid(operator_client, national, monkeypatch):
    from federation import tasks

    superior = Peer.objects.create(entity_id="http://127.0.0.1:8100", relation="superior")

    def broken(peer, force=False):
        raise chains.ChainError("invalid_signature", "the superior's statement does not verify")

    monkeypatch.setattr(chains, "refresh_peer", broken)
    tasks.refresh_peers()
    section = peer_section(operator_client.get(URL).content.decode(), superior.entity_id)
    assert attribute(cell(section, "peer-chain"), "data-state") == "invalid"

    monkeypatch.setattr(chains, "refresh_peer", lambda peer, force=False: None)
    monkeypatch.setattr(chains, "chain_for", lambda entity_id: None)
    tasks.refresh_peers()
    superior.refresh_from_db()
    assert superior.consecutive_failures == 0 and superior.last_error == ""
