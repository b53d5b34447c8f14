import pytest

from registry import services
from tests.support import factories

pytestmark = pytest.mark.django_db


def test_resolve_returns_the_record(api, resource):
    response = api.get(f"/api/v1/resolve/{resource.ucri}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["ucri"] == resource.ucri
    assert body["status"] == "active"
    assert body["version"] == 1
    assert body["price_per_hour"] == 8.5
    assert body["provider"] == {"name": "Guizhou Cloud Compute Co", "prefix": "86.52.GZ01", "credential_status": None}
    assert body["site"]["hub"] == "gz"
    assert body["source"] == "local"
    assert body["authority"] == "http://127.0.0.1:8052"
    assert "synced_at" not in body
