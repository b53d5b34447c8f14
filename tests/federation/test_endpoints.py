"""Federation endpoints refuse what they must (regressions from review)."""

import json
import time

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from federation.models import Peer
from identity import crypto, keys
from identity.models import Purpose
from registry.availability import report
from registry.records import timestamp
from tests.support import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def national(db):
    return factories.node(role="national", code=None, entity_id="http://127.0.0.1:8000")


def test_resolve_only_for_known_entities(api, national):
    response = api.get("/federation/resolve", {"sub": "http://127.0.0.1:1/admin?x=",
                                               "trust_anchor": national.entity_id})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    own = api.get("/federation/resolve", {"sub": national.entity_id, "trust_anchor": national.entity_id})
    assert own.status_code == 200 and own["Content-Type"] == "application/resolve-response+jwt"


def node_client(node, client_id: str, scope: str) -> APIClient:
    """A peer's access token as this node would issue it (the token endpoint is tested elsewhere)."""
    now = int(time.time())
    token = keys.sign(Purpose.ACCESS_TOKEN, {"iss": node.entity_id, "aud": node.entity_id, "sub": client_id,
                                             "client_id": client_id, "iat": now, "exp": now + 60,
                                             "jti": f"{client_id}-{now}", "scope": scope}, typ="at+jwt").token
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.mark.parametrize("query", ["after=٣", "after=3_0", "after=-1", "limit=", "limit=1001",
                                   "after=99999999999999999999", "limit=1e3"])
def test_feed_parameters_are_plain_integers(national, query):
    Peer.objects.create(entity_id="http://127.0.0.1:8099", relation="superior", jwks=[])
    client = node_client(national, "http://127.0.0.1:8099", "federation:sync")
    response = client.get(f"/federation/changes?{query}")
    assert response.status_code == 400 and response.json()["error"] in {"invalid_request"}, query


def test_notify_refuses_out_of_range_seq(national):
    Peer.objects.create(entity_id="http://127.0.0.1:8098", relation="subordinate", jwks=[], prefixes=["86.52"])
    client = node_client(national, "http://127.0.0.1:8098", "federation:notify")
    for seq in (10**30, -1, "5", True):
        assert client.post("/federation/notify", {"seq": seq}, format="json").status_code == 400
    assert client.post("/federation/notify", {"seq": 5}, format="json").status_code == 202
    assert Peer.objects.get(entity_id="http://127.0.0.1:8098").origin_head == 0  # a hint, not a measurement


def test_unknown_federation_paths_answer_in_oidf_form(api, national):
    response = api.get("/federation/nothing")
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_availability_is_published_once_per_pull_and_a_busy_feed_still_ends(national):
    """Regression: publishing on every page kept an active feed from ending; throttling by time could
    drop a publish that no later pull picked up."""
    provider = factories.provider(code="BUSY")
    site = factories.site(provider)
    resources = [factories.resource(site) for _ in range(5)]
    Peer.objects.create(entity_id="http://127.0.0.1:8097", relation="superior", jwks=[])
    client = node_client(national, "http://127.0.0.1:8097", "federation:sync")
    cursor = 0

    def report_all(units: int) -> None:
        report(provider=provider, reports=[{"ucri": r.ucri, "available_units": units, "valid_for": 60,
                                            "observed_at": timestamp(timezone.now())} for r in resources])

    def pull() -> list[dict]:
        nonlocal cursor
        seen: list[dict] = []
        for _ in range(50):
            report_all(len(seen) % 8)  # the provider keeps reporting between pages
            token = client.get(f"/federation/changes?after={cursor}&limit=2").content.decode()
            claims = json.loads(crypto.b64url_decode(token.split(".")[1]))
            seen += claims["changes"]
            cursor = claims["next"]
            if not claims["has_more"]:
                return seen
        raise AssertionError("the feed never ended")

    first = [c for c in pull() if c["type"] == "availability"]
    assert len(first) == 5 and len({c["key"] for c in first}) == 5  # one entry per resource
    second = [c for c in pull() if c["type"] == "availability"]
    assert 1 <= len(second) <= 5 and len({c["key"] for c in second}) == len(second)
