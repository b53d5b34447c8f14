"""Referrals (CONTRACT §3): a node that holds no record refers to the node to ask next."""

import pytest

from registry import identifiers, services
from tests.support import factories

pytestmark = pytest.mark.django_db


def _resolve(api, ucri):
    response = api.get(f"/api/v1/resolve/{ucri}")
    return response.status_code, response.json(), response


def test_no_superior_means_unknown(api, node):
    assert _resolve(api, identifiers.compose("86.11.X1", "000000000001"))[1]["code"] == "ucri_unknown"


def test_outside_the_subtree_refers_to_the_superior(api, node):
    services.platform_set_superior(entity_id="http://127.0.0.1:8000", prefix="86")
    ucri = identifiers.compose("86.11.X1", "000000000001")
    status, body, response = _resolve(api, ucri)
    assert (status, body["code"]) == (404, "ucri_referral")
    assert body["next_node"] == "http://127.0.0.1:8000"
    assert body["location"] == f"http://127.0.0.1:8000/api/v1/resolve/{ucri}"
    assert response["Location"] == body["location"]


def test_delegated_prefix_refers_to_the_subordinate(api, node):
    services.platform_delegate(entity_id="http://127.0.0.1:8100", prefix="86.52.IND1")
    services.platform_set_superior(entity_id="http://127.0.0.1:8000", prefix="86")
    ucri = identifiers.compose("86.52.IND1.P01", "000000000001")
    status, body, _ = _resolve(api, ucri)
    assert (status, body["code"], body["next_node"]) == (404, "ucri_referral", "http://127.0.0.1:8100")
    # Our own providers' unknown UCRIs stay unknown: nobody else could hold them.
    own = factories.provider(code="OWN")
    assert _resolve(api, identifiers.compose(own.prefix, "000000000001"))[1]["code"] == "ucri_unknown"


def test_batch_resolve_gives_referrals_too(api, node):
    services.platform_set_superior(entity_id="http://127.0.0.1:8000", prefix="86")
    ucri = identifiers.compose("86.11.X1", "000000000001")
    body = api.post("/api/v1/resolve", {"ucris": [ucri]}, format="json").json()
    assert body["results"][ucri]["code"] == "ucri_referral"


def test_platform_delegation_rules(node):
    from core.errors import ApplicationError

    with pytest.raises(ApplicationError):
        services.platform_delegate(entity_id="http://127.0.0.1:8101", prefix="86.11.X")  # not under 86.52
    with pytest.raises(ApplicationError):
        services.platform_delegate(entity_id="ftp://x", prefix="86.52.IND2")
    provider = factories.provider(code="TAKEN")
    with pytest.raises(ApplicationError) as excinfo:
        services.platform_delegate(entity_id="http://127.0.0.1:8102", prefix=provider.prefix)
    assert excinfo.value.code == "prefix_taken"
