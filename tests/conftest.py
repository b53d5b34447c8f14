import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from identity import keys
from registry import services
from tests.support import auth, factories


@pytest.fixture(autouse=True)
def _clear_cache(request):
    # The shared cache lives in the database by default; rate limits and replay caches must not leak
    # between tests. Pure tests (no database) have nothing to clear.
    marker = request.node.get_closest_marker("django_db")
    transactional = "transactional_db" in request.fixturenames or bool(marker and marker.kwargs.get("transaction"))
    if marker or transactional or "db" in request.fixturenames:
        request.getfixturevalue("transactional_db" if transactional else "db")
        cache.clear()
    # Per-process copies of committed rows (this node, its keys) must not outlive the test's database.
    services.forget_this_node()
    keys.forget_cached_keys()
    yield
    services.forget_this_node()
    keys.forget_cached_keys()


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def node(db):
    return factories.node()


@pytest.fixture
def provider(node):
    return factories.provider(code="GZ01", name="Guizhou Cloud Compute Co")


@pytest.fixture
def site(provider):
    return factories.site(provider, name="Gui'an DC 1", province="52", pue=1.18, green_ratio=0.45)


@pytest.fixture
def resource(site):
    return factories.resource(site)


@pytest.fixture
def reader(node):
    """An API client holding a scheduler's access token with ``resources:read``."""
    return auth.bearer_client(auth.register("scheduler-test", "resources:read handoff:request"))
