"""Every identity, federation and scheduling admin page renders for a superuser; none shows a private key."""

import pytest
from django.contrib.auth import get_user_model

from identity import credentials, keys
from identity.models import NodeKey
from tests.support import factories

pytestmark = pytest.mark.django_db

PAGES = ["identity/client", "identity/nodekey", "identity/providercredential", "identity/statuslist",
         "federation/peer", "federation/violation", "federation/trustanchor", "federation/auditcheckpoint",
         "federation/peercheckpoint", "scheduling/handoff"]


@pytest.mark.parametrize("page", PAGES)
def test_changelists_render(client, node, page):
    credentials.onboard(name="Admin Pages", uscc=factories.valid_uscc(), code="ADM1", actor="t")
    client.force_login(get_user_model().objects.create_superuser("root", "r@example.cn", "pw-long-enough-123"))
    assert client.get(f"/admin/{page}/").status_code == 200


def test_node_key_pages_never_show_the_private_half(client, node):
    keys.ensure_keys()
    key = NodeKey.objects.first()
    client.force_login(get_user_model().objects.create_superuser("root", "r@example.cn", "pw-long-enough-123"))
    page = client.get(f"/admin/identity/nodekey/{key.pk}/change/").content.decode()
    assert key.kid in page
    assert "private_key_encrypted" not in page and bytes(key.private_key_encrypted).decode() not in page
