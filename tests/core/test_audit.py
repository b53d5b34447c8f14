"""The audit log is hash-chained: each entry carries the previous entry's hash."""

import pytest

from core import audit
from core.models import AuditEntry
from tests.support import factories

pytestmark = pytest.mark.django_db


def test_entries_chain_from_genesis():
    first = audit.record(actor="user:alice", action="provider.approved", target_type="provider",
                         target_key="86.52.GZ01", data={"name": "A"})
    second = audit.record(actor="user:bob", action="provider.suspended", target_type="provider",
                          target_key="86.52.GZ01", data={"reason": "audit"})
    assert first.seq == 1 and first.prev_hash == audit.GENESIS_HASH
    assert second.prev_hash == first.hash
    assert len(second.hash) == 64
    assert audit.verify_chain() is None


def test_operator_events_are_audited_by_the_services():
    factories.node()
    provider = factories.provider(code="AUD")
    actions = list(AuditEntry.objects.values_list("action", "target_key"))
    assert ("node.initialised", "86.52") in actions
    assert ("provider.approved", provider.prefix) in actions


@pytest.mark.parametrize(("tamper", "first_bad"),
                         [("edit_data", 3), ("edit_actor", 3), ("delete_middle", 4), ("relink", 3)])
def test_tampering_is_detected(tamper, first_bad):
    entries = [audit.record(actor="user:op", action="key.rotated", data={"n": n}) for n in range(5)]
    victim = entries[2]
    if tamper == "edit_data":
        AuditEntry.objects.filter(pk=victim.pk).update(data={"n": 99})
    elif tamper == "edit_actor":
        AuditEntry.objects.filter(pk=victim.pk).update(actor="user:mallory")
    elif tamper == "delete_middle":
        AuditEntry.objects.filter(pk=victim.pk).delete()
    else:  # rewrite an entry and its hash: the next entry's link breaks
        AuditEntry.objects.filter(pk=victim.pk).update(data={"n": 99}, hash="f" * 64)
    assert audit.verify_chain() == first_bad
