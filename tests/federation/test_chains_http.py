"""Trust chains fetched over real HTTP when a node joins its superior: the anchor is pinned, never
trusted because it signs itself; statements are checked link by link (CONTRACT §8)."""

from __future__ import annotations

import time

import pytest

from core.errors import ApplicationError
from federation import services
from federation.models import Peer
from identity import crypto
from tests.support import factories
from tests.support.fakepeer import FakePeer

pytestmark = pytest.mark.django_db(transaction=True)
OWN = "http://127.0.0.1:8101"


@pytest.fixture
def world():
    factories.node(role="industry", code="52.IND1", entity_id=OWN)
    anchor = FakePeer(prefixes=["86"])
    provincial = FakePeer(prefixes=["86.52"], authority_hints=[anchor.url])
    yield anchor, provincial
    anchor.close()
    provincial.close()


def statement(anchor: FakePeer, provincial: FakePeer, *, key=None, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": anchor.url, "sub": provincial.url, "iat": now, "exp": now + 3600,
              "jwks": {"keys": [provincial.jwk]},
              "metadata_policy": {"compute_registry": {"ucri_prefixes": {"prefix_within": ["86.52"]}}},
              "metadata_policy_crit": ["prefix_within"], "constraints": {"max_path_length": 1}}
    claims.update(overrides)
    return anchor.sign(claims, "entity-statement+jwt", key)


def join(anchor: FakePeer, provincial: FakePeer, *, pin=None) -> Peer:
    services.trust_anchor_add(entity_id=anchor.url, jwks=pin, actor="test")
    return services.superior_set(entity_id=provincial.url, actor="test")


def refused(anchor: FakePeer, provincial: FakePeer, reason: str, *, pin=None) -> None:
    with pytest.raises(ApplicationError) as excinfo:
        join(anchor, provincial, pin=pin)
    assert excinfo.value.code == reason, excinfo.value.detail
    assert not Peer.objects.filter(entity_id=provincial.url, relation="superior").exclude(jwks=[]).exists()


def test_a_valid_chain_makes_the_provincial_node_our_superior(world):
    anchor, provincial = world
    provincial.statements = {}
    anchor.statements[provincial.url] = statement(anchor, provincial)
    peer = join(anchor, provincial)
    assert peer.jwks == [provincial.jwk]
    assert peer.metadata["ucri_prefixes"] == ["86.52"]


def test_an_expired_subordinate_statement(world):
    anchor, provincial = world
    now = int(time.time())
    anchor.statements[provincial.url] = statement(anchor, provincial, iat=now - 7200, exp=now - 3600)
    refused(anchor, provincial, "expired")


def test_a_pinned_anchor_key_that_does_not_match(world):
    anchor, provincial = world
    anchor.statements[provincial.url] = statement(anchor, provincial)
    refused(anchor, provincial, "invalid_signature", pin=[crypto.public_jwk(crypto.generate_private_key())])


def test_a_statement_signed_by_a_sibling(world):
    anchor, provincial = world
    sibling = crypto.generate_private_key()
    anchor.statements[provincial.url] = statement(anchor, provincial, key=sibling)
    refused(anchor, provincial, "invalid_signature")


def test_an_unknown_critical_policy_operator(world):
    anchor, provincial = world
    anchor.statements[provincial.url] = statement(
        anchor, provincial, metadata_policy={"compute_registry": {"ucri_prefixes": {
            "prefix_within": ["86.52"], "must_be_prime": True}}},
        metadata_policy_crit=["prefix_within", "must_be_prime"])
    refused(anchor, provincial, "unknown_critical_operator")


def test_a_subordinate_declaring_a_prefix_outside_prefix_within(world):
    anchor, provincial = world
    anchor.statements[provincial.url] = statement(
        anchor, provincial, metadata_policy={"compute_registry": {"ucri_prefixes": {"prefix_within": ["86.11"]}}})
    refused(anchor, provincial, "policy_violation")


def test_a_superior_that_is_not_above_our_prefix(world):
    anchor, provincial = world
    provincial.prefixes = ["86.11"]
    anchor.statements[provincial.url] = statement(
        anchor, provincial, metadata_policy={"compute_registry": {"ucri_prefixes": {"prefix_within": ["86.11"]}}})
    refused(anchor, provincial, "prefix_mismatch")


def test_an_anchor_is_never_trusted_without_a_pin(world):
    anchor, provincial = world
    anchor.statements[provincial.url] = statement(anchor, provincial)
    with pytest.raises(ApplicationError) as excinfo:
        services.superior_set(entity_id=provincial.url, actor="test")
    assert excinfo.value.code == "no_trust_anchor"
    other = FakePeer(prefixes=["86"])
    services.trust_anchor_add(entity_id=other.url, actor="test")  # pins a different anchor
    with pytest.raises(ApplicationError) as excinfo:
        services.superior_set(entity_id=provincial.url, actor="test")
    assert excinfo.value.code in {"untrusted_anchor", "max_depth"}
    other.close()
