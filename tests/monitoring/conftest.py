from __future__ import annotations

import pytest

from identity import keys
from identity.models import Purpose
from tests.support import factories


@pytest.fixture
def ready_node(db):
    """An initialised node with every purpose's key, as ``cir_node_init`` leaves it."""
    node = factories.node()
    keys.ensure_keys((*keys.API_PURPOSES, Purpose.FEDERATION))
    return node
