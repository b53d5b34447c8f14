"""Signed audit checkpoints (CONTRACT §5, §8) and ``cir_audit_verify``: every way of altering the audit
log that a checkpoint covers is named by the first broken entry, with a reason."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from core import audit
from core.errors import ApplicationError
from core.models import AuditEntry
from federation import checkpoints, tasks
from federation.models import AuditCheckpoint, Peer
from identity import crypto, keys, tokens
from identity.models import NodeKey, Purpose
from tests.support import factories

pytestmark = pytest.mark.django_db
URL = "/api/v1/audit/checkpoints/latest"
ENTITY_ID = "http://127.0.0.1:8052"


@pytest.fixture
def node():
    platform = factories.node(entity_id=ENTITY_ID)
    keys.ensure_keys((*keys.API_PURPOSES, Purpose.FEDERATION))  # as cir_node_init does
    return platform


def events(n: int) -> list[int]:
    """Record ``n`` audit events; their seqs."""
    return [audit.record(actor="user:alice", action="thing.changed", target_type="thing", target_key=f"t{i}",
                         data={"n": i}).seq for i in range(n)]


def sign() -> AuditCheckpoint:
    checkpoint = checkpoints.sign_if_advanced()
    assert checkpoint is not None
    return checkpoint


def verify(capsys, *args) -> tuple[dict, CommandError | None]:
    error = None
    try:
        call_command("cir_audit_verify", "--json", *args)
    except CommandError as exc:
        error = exc
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.endswith("\n"), "one JSON object on one line"
    return json.loads(out), error


def broken(capsys, *args) -> dict:
    result, error = verify(capsys, *args)
    assert error is not None, "a broken log exits non-zero"
    assert result["ok"] is False
    return result


def rehash_from(seq: int) -> None:
    """What someone with write access to the database does to hide an edit: recompute every later link."""
    prev = AuditEntry.objects.get(seq=seq - 1).hash if seq > 1 else audit.GENESIS_HASH
    for entry in AuditEntry.objects.filter(seq__gte=seq).order_by("seq"):
        entry.prev_hash = prev
        new = audit.entry_hash(entry)
        AuditEntry.objects.filter(pk=entry.pk).update(prev_hash=prev, hash=new)
        prev = new


def claims_of(token: str) -> dict:
    return json.loads(crypto.b64url_decode(token.split(".")[1]))


# Signing, the task and the endpoint -----------------------------------------------------------------

def test_a_checkpoint_signs_the_head_with_the_credential_key(node):
    events(3)
    checkpoint = sign()
    head = AuditEntry.objects.order_by("-seq").first()
    assert (checkpoint.seq, checkpoint.head) == (head.seq, head.hash)
    verified = tokens.verify(checkpoint.token, tokens.AUDIT_CHECKPOINT,
                             keys=keys.verification_keys(Purpose.CREDENTIAL), issuer=ENTITY_ID)
    assert verified.header["typ"] == "audit-checkpoint+jwt"
    assert set(verified.claims) == {"iss", "iat", "seq", "head"}
    assert (verified.claims["seq"], verified.claims["head"]) == (head.seq, head.hash)
    assert NodeKey.objects.get(kid=verified.kid).purpose == Purpose.CREDENTIAL


def test_the_task_signs_only_when_the_head_advances(node):
    events(2)
    first = tasks.sign_audit_checkpoint()
    assert first["signed"] == AuditEntry.objects.order_by("-seq").first().seq
    assert tasks.sign_audit_checkpoint() == {"signed": None}
    assert tasks.sign_audit_checkpoint() == {"signed": None}
    assert AuditCheckpoint.objects.count() == 1
    (seq,) = events(1)
    assert tasks.sign_audit_checkpoint() == {"signed": seq}
    assert list(AuditCheckpoint.objects.order_by("seq").values_list("seq", flat=True)) == [first["signed"], seq]


def test_a_node_that_was_never_initialised_signs_nothing(db):
    assert tasks.sign_audit_checkpoint() == {"signed": None, "error": "node_not_initialized"}
    assert not AuditCheckpoint.objects.exists()


def test_signing_refuses_when_the_log_no_longer_holds_the_last_signed_head(node):
    events(3)
    last = sign()
    AuditEntry.objects.filter(seq=last.seq).delete()  # cut the tail ...
    with pytest.raises(ApplicationError) as refused:
        checkpoints.sign_if_advanced()
    assert refused.value.code == "audit_log_changed"
    events(2)  # ... and grow past it: still refused, a new checkpoint would vouch for the cut log
    assert tasks.sign_audit_checkpoint() == {"signed": None, "error": "audit_log_changed"}
    assert AuditCheckpoint.objects.count() == 1


def test_signing_refuses_after_a_rehash_of_the_signed_head(node):
    seqs = events(4)
    sign()
    AuditEntry.objects.filter(seq=seqs[1]).update(data={"n": "forged"})
    rehash_from(seqs[1])
    events(1)
    with pytest.raises(ApplicationError, match="refusing"):
        checkpoints.sign_if_advanced()


def test_the_endpoint_serves_the_stored_checkpoint(node, api):
    events(2)
    first = api.get(URL)  # a brand-new node signs its first checkpoint on demand
    assert first.status_code == 200
    assert first["Content-Type"] == "application/audit-checkpoint+jwt"
    stored = AuditCheckpoint.objects.get()
    assert first.content.decode() == stored.token
    again = api.get(URL)
    assert again.content == first.content, "the same checkpoint until the head advances"
    assert claims_of(again.content.decode())["seq"] == stored.seq
    events(1)
    assert api.get(URL).content == first.content, "only the beat task signs new heads"
    tasks.sign_audit_checkpoint()
    newer = claims_of(api.get(URL).content.decode())
    assert newer["seq"] == AuditEntry.objects.order_by("-seq").first().seq > stored.seq
    assert AuditCheckpoint.objects.count() == 2


def test_the_endpoint_is_public_and_answers_for_an_empty_log(node, api):
    AuditEntry.objects.all().delete()
    answer = api.get(URL)
    assert answer.status_code == 200
    claims = claims_of(answer.content.decode())
    assert (claims["seq"], claims["head"]) == (0, audit.GENESIS_HASH)
    assert claims["iss"] == ENTITY_ID and "exp" not in claims and "aud" not in claims


def test_a_first_credential_key_is_created_before_the_head_is_read(db):
    factories.node(entity_id=ENTITY_ID)  # no keys yet: creating the first one is itself an audit event
    checkpoint = sign()
    head = AuditEntry.objects.order_by("-seq").first()
    assert head.action == "key.created" and (checkpoint.seq, checkpoint.head) == (head.seq, head.hash)


# cir_audit_verify ----------------------------------------------------------------------------------

def test_an_intact_log_passes(node, capsys):
    events(3)
    sign()
    events(2)
    sign()
    seqs = events(2)
    result, error = verify(capsys)
    assert error is None
    assert result["ok"] is True and result["first_broken"] is None and result["reason"] is None
    assert result["entries"] == AuditEntry.objects.count() and result["head"] == seqs[-1]
    assert result["checkpoints_checked"] == 2 and result["checkpoints_unverified"] == 0
    assert any("protected by the chain alone" in note for note in result["notes"])
    call_command("cir_audit_verify")
    assert "audit log intact" in capsys.readouterr().out


@pytest.mark.parametrize("change", [{"data": {"n": "edited"}}, {"actor": "user:mallory"}, {"action": "x.y"},
                                    {"target_key": "other"}])
def test_editing_an_entry_is_named(node, capsys, change):
    seqs = events(5)
    sign()
    AuditEntry.objects.filter(seq=seqs[2]).update(**change)
    result = broken(capsys)
    assert result["first_broken"] == seqs[2]
    assert "was edited" in result["reason"]


def test_deleting_a_middle_entry_is_named(node, capsys):
    seqs = events(5)
    sign()
    AuditEntry.objects.filter(seq=seqs[2]).delete()
    result = broken(capsys)
    assert result["first_broken"] == seqs[2]
    assert "missing" in result["reason"]


def test_deleting_the_last_covered_entry_is_named(node, capsys):
    seqs = events(5)
    sign()
    assert audit.verify_chain() is None
    AuditEntry.objects.filter(seq=seqs[-1]).delete()
    assert audit.verify_chain() is None, "the chain alone cannot see a cut tail"
    result = broken(capsys)
    assert result["first_broken"] == seqs[-1]
    assert "deleted" in result["reason"] and f"covers up to {seqs[-1]}" in result["reason"]


def test_cutting_several_tail_entries_names_the_first_one_gone(node, capsys):
    seqs = events(5)
    sign()
    AuditEntry.objects.filter(seq__gte=seqs[2]).delete()
    result = broken(capsys)
    assert result["first_broken"] == seqs[2]
    assert f"entries {seqs[2]}..{seqs[-1]} deleted" in result["reason"]


def test_a_rehash_is_named_from_the_last_checkpoint_that_still_matches(node, capsys):
    before = events(3)
    first = sign()
    seqs = events(5)
    sign()
    AuditEntry.objects.filter(seq=seqs[2]).update(data={"n": "edited"})
    rehash_from(seqs[2])
    assert audit.verify_chain() is None, "internally consistent again"
    result = broken(capsys)
    assert first.seq == before[-1]
    assert result["first_broken"] == first.seq + 1
    assert "re-hashed" in result["reason"] and f"{first.seq + 1}..{seqs[-1]}" in result["reason"]


def test_a_rehash_is_pinned_exactly_when_the_previous_entry_was_checkpointed(node, capsys):
    seqs = events(3)
    sign()
    for _ in range(3):  # one checkpoint per entry, as beat gives when entries arrive slowly
        seqs += events(1)
        sign()
    target = seqs[4]
    AuditEntry.objects.filter(seq=target).update(actor="user:mallory")
    rehash_from(target)
    result = broken(capsys)
    assert result["first_broken"] == target
    assert result["reason"].startswith(f"entry {target} was changed and the chain re-hashed")


def test_entries_after_the_last_checkpoint_are_protected_by_the_chain_alone(node, capsys):
    events(3)
    sign()
    later = events(3)
    AuditEntry.objects.filter(seq=later[1]).update(data={"n": "edited"})
    rehash_from(later[1])
    result, error = verify(capsys)
    assert error is None and result["ok"] is True  # the documented limit
    assert any(f"entries {later[0]}..{later[-1]} are newer than every checkpoint" in n for n in result["notes"])


def test_a_forged_checkpoint_is_refused(node, capsys):
    events(3)
    sign()
    head = AuditEntry.objects.order_by("-seq").first()
    mallory = crypto.generate_private_key()
    forged = crypto.sign({"iss": ENTITY_ID, "iat": 1, "seq": head.seq, "head": "f" * 64}, mallory,
                         typ="audit-checkpoint+jwt", kid=crypto.public_jwk(mallory)["kid"])
    AuditCheckpoint.objects.filter(seq=head.seq).update(token=forged, head="f" * 64)
    result = broken(capsys)
    assert result["first_broken"] is None, "the entries are intact; the checkpoint is not ours"
    assert "forged" in result["reason"]
    assert result["checkpoints_checked"] == 0


def test_a_checkpoint_with_our_kid_but_another_signature_is_refused(node, capsys):
    events(2)
    real = sign()
    kid = tokens.parse_unverified(real.token, tokens.AUDIT_CHECKPOINT)[0]["kid"]
    forged = crypto.sign(claims_of(real.token), crypto.generate_private_key(), typ="audit-checkpoint+jwt", kid=kid)
    AuditCheckpoint.objects.filter(pk=real.pk).update(token=forged)
    result = broken(capsys)
    assert result["first_broken"] is None and "invalid_signature" in result["reason"]


def test_an_edited_checkpoint_row_is_seen(node, capsys):
    seqs = events(4)
    checkpoint = sign()
    AuditEntry.objects.filter(seq=seqs[1]).update(data={"n": "edited"})
    rehash_from(seqs[1])
    AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(  # make the row agree with the re-hashed log
        head=AuditEntry.objects.get(seq=checkpoint.seq).hash)
    result = broken(capsys)
    assert "re-hashed" in result["reason"]  # the signed token is what counts
    assert any("the row was edited" in p["reason"] for p in result["problems"])


def test_a_checkpoint_signed_by_a_retired_key_is_compared_but_not_verified(node, capsys):
    seqs = events(3)
    checkpoint = sign()
    kid = tokens.parse_unverified(checkpoint.token, tokens.AUDIT_CHECKPOINT)[0]["kid"]
    NodeKey.objects.filter(kid=kid).delete()  # pruned: no longer published, nor stored
    keys.signing_key(Purpose.CREDENTIAL)  # its successor
    result, error = verify(capsys)
    assert error is None and result["checkpoints_checked"] == 1 and result["checkpoints_unverified"] == 1
    assert any("signature not checked" in note for note in result["notes"])
    AuditEntry.objects.filter(seq=seqs[0]).update(data={"n": "edited"})
    rehash_from(seqs[0])
    result = broken(capsys)
    assert result["first_broken"] == 1 and "signature not checkable" in result["reason"]


def test_a_superseded_but_stored_key_still_verifies(node, capsys):
    events(2)
    checkpoint = sign()
    kid = tokens.parse_unverified(checkpoint.token, tokens.AUDIT_CHECKPOINT)[0]["kid"]
    from django.utils import timezone

    NodeKey.objects.filter(kid=kid).update(unpublish_at=timezone.now())
    assert not list(keys.verification_keys(Purpose.CREDENTIAL)(kid))
    result, error = verify(capsys)
    assert error is None and result["checkpoints_checked"] == 1 and result["checkpoints_unverified"] == 0


# --checkpoints FILE: what the superior kept of this node -----------------------------------------

def test_the_superiors_checkpoints_catch_what_the_local_ones_no_longer_can(node, capsys, tmp_path):
    Peer.objects.create(entity_id="http://127.0.0.1:8000", relation=Peer.Relation.SUPERIOR)
    seqs = events(3)
    sign()
    seqs += events(3)
    sign()
    kept = tmp_path / "kept.txt"
    kept.write_text("# exported from the superior's PeerCheckpoint rows\n\n"
                    + "\n".join(AuditCheckpoint.objects.order_by("seq").values_list("token", flat=True)) + "\n")
    result, error = verify(capsys)
    assert error is None and result["superior"] == "http://127.0.0.1:8000"
    assert any("--checkpoints FILE" in note for note in result["notes"])
    result, error = verify(capsys, "--checkpoints", str(kept))
    assert error is None and result["checkpoints_checked"] == 4
    # Someone with the database re-hashes from an early entry and removes every local checkpoint.
    AuditEntry.objects.filter(seq=seqs[1]).update(data={"n": "edited"})
    rehash_from(seqs[1])
    AuditCheckpoint.objects.all().delete()
    assert verify(capsys)[1] is None, "locally nothing is left to contradict the re-hashed log"
    result = broken(capsys, "--checkpoints", str(kept))
    assert result["first_broken"] == 1  # no kept checkpoint before the change still matches
    assert f"{kept}:3 checkpoint" in result["reason"] and "re-hashed" in result["reason"]


def test_a_forged_line_in_the_file_is_named(node, capsys, tmp_path):
    events(2)
    sign()
    mallory = crypto.generate_private_key()
    forged = crypto.sign({"iss": ENTITY_ID, "iat": 1, "seq": 1, "head": "a" * 64}, mallory,
                         typ="audit-checkpoint+jwt", kid=crypto.public_jwk(mallory)["kid"])
    kept = tmp_path / "kept.txt"
    kept.write_text(f"{forged}\nnot-a-jwt\n")
    result = broken(capsys, "--checkpoints", str(kept))
    assert result["first_broken"] is None
    reasons = [p["reason"] for p in result["problems"]]
    assert f"{kept}:1" in reasons[0] and "forged" in reasons[0]
    assert f"{kept}:2" in reasons[1] and "malformed" in reasons[1]


def test_a_missing_file_is_a_bad_argument(node, tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        call_command("cir_audit_verify", "--checkpoints", str(tmp_path / "absent.txt"))


def test_the_superior_keeps_each_new_checkpoint_once_and_flags_a_rewritten_log(node, monkeypatch):
    from federation import chains, clients, sync
    from federation.models import PeerCheckpoint, Violation

    # The superior's side of sync, pointed at this node's own endpoint and keys.
    subordinate = Peer.objects.create(entity_id=ENTITY_ID, relation=Peer.Relation.SUBORDINATE,
                                      metadata={"audit_checkpoint_endpoint": f"{ENTITY_ID}{URL}"})
    monkeypatch.setattr(clients, "fetch_jwt", lambda url, media_type: checkpoints.latest_or_sign().token)
    monkeypatch.setattr(chains, "signed_api_keys",
                        lambda entity_id, purpose: list(keys.verification_keys(Purpose.CREDENTIAL)(None)))
    seqs = events(3)
    first = sync.keep_checkpoint(subordinate)
    assert sync.keep_checkpoint(subordinate).pk == first.pk, "the same stored checkpoint is kept once"
    seqs += events(2)
    tasks.sign_audit_checkpoint()
    second = sync.keep_checkpoint(subordinate)
    assert second.seq == seqs[-1] and PeerCheckpoint.objects.count() == 2
    # The subordinate's database is rewritten and its local checkpoints dropped, so it signs again.
    AuditEntry.objects.filter(seq=seqs[3]).update(data={"n": "edited"})
    rehash_from(seqs[3])
    AuditCheckpoint.objects.all().delete()
    assert sync.keep_checkpoint(subordinate) is None
    assert Violation.objects.get(peer=subordinate).reason == "audit_log_changed"
