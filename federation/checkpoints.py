"""Signed audit checkpoints (CONTRACT §5 "audit checkpoint", §8) and checking the audit log against them.

The audit log (``core.audit``) is hash-chained, so editing or deleting an entry breaks the chain; but
someone who can write the database can also re-hash every later entry, or cut the tail, and leave a
chain that checks out. A checkpoint is this node's signature (``credential`` key) over the head of the
log at a moment: ``{"iss", "iat", "seq", "head"}``. Checkpoints are stored here, served at
``/api/v1/audit/checkpoints/latest`` and kept by the superior, and never expire. Every entry up to a
checkpoint's ``seq`` is then pinned: a re-hash or a cut tail no longer matches the signed head.
Entries newer than the latest checkpoint are protected by the chain alone.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from core import audit
from core.errors import ApplicationError
from core.models import AuditEntry
from identity import keys, tokens
from identity.models import NodeKey, Purpose
from registry.services import this_node

from .models import AuditCheckpoint, Peer

log = logging.getLogger(__name__)

TYP = "audit-checkpoint+jwt"
AUDIT_LOG_CHANGED = "audit_log_changed"  # error code: the log no longer holds the last signed head
_HEAD = re.compile(r"^[0-9a-f]{64}\Z")
MAX_PROBLEMS = 20  # listed in a report; the count is unbounded


# Signing ------------------------------------------------------------------------------------------

def _head() -> tuple[int, str]:
    row = AuditEntry.objects.order_by("-seq").values_list("seq", "hash").first()
    return (row[0], row[1]) if row else (0, audit.GENESIS_HASH)


def latest() -> AuditCheckpoint | None:
    return AuditCheckpoint.objects.order_by("-seq").first()


def sign_if_advanced(now: dt.datetime | None = None) -> AuditCheckpoint | None:
    """Sign and store a checkpoint of the current head if it advanced since the last stored one;
    None when there is nothing new (or another worker signed this head first).

    Refuses (``audit_log_changed``) when the log no longer holds the last signed head: the tail was
    cut or the chain re-hashed. Signing then would vouch for the altered log."""
    now = now or timezone.now()
    issuer = this_node().entity_id
    keys.ensure_keys((Purpose.CREDENTIAL,), now=now)  # a node's first key is itself audited: before the head
    seq, head = _head()
    last = latest()
    if last is not None:
        if (seq, head) == (last.seq, last.head):
            return None
        held = audit.GENESIS_HASH if last.seq == 0 else \
            AuditEntry.objects.filter(seq=last.seq).values_list("hash", flat=True).first()
        if seq < last.seq or held != last.head:
            detail = (f"the audit log no longer holds checkpoint {last.seq} (head {last.head}); it now ends at "
                      f"{seq}: refusing to sign. Run cir_audit_verify.")
            log.error(detail)
            raise ApplicationError(AUDIT_LOG_CHANGED, detail, status=409)
    claims = {"iss": issuer, "iat": int(now.timestamp()), "seq": seq, "head": head}
    token = keys.sign(Purpose.CREDENTIAL, claims, typ=TYP, now=now).token
    try:
        with transaction.atomic():
            return AuditCheckpoint.objects.create(seq=seq, head=head, token=token, created_at=now)
    except IntegrityError:
        return None  # another worker stored this head first


def latest_or_sign(now: dt.datetime | None = None) -> AuditCheckpoint | None:
    """The latest stored checkpoint; a node that has none yet signs its first one (nothing stored can
    contradict it, so this never refuses)."""
    checkpoint = latest()
    if checkpoint is None:
        sign_if_advanced(now)
        checkpoint = latest()
    return checkpoint


# Verification -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    seq: int | None  # first affected audit entry; None when only a checkpoint is at fault
    reason: str


@dataclass
class Report:
    entries: int = 0
    head: int = 0
    checkpoints_checked: int = 0
    checkpoints_unverified: int = 0  # signed by a key this node no longer holds: compared, not verified
    superior: str | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        located = [p for p in self.problems if p.seq is not None]
        if located:
            return min(located, key=lambda p: p.seq)  # stable: the first reason found for that seq
        return self.problems[0] if self.problems else None

    def as_dict(self) -> dict[str, Any]:
        first = self.first
        return {"ok": self.ok, "first_broken": first.seq if first else None, "reason": first.reason if first else None,
                "entries": self.entries, "head": self.head, "checkpoints_checked": self.checkpoints_checked,
                "checkpoints_unverified": self.checkpoints_unverified, "superior": self.superior,
                "problems": [{"seq": p.seq, "reason": p.reason} for p in self.problems[:MAX_PROBLEMS]],
                "notes": self.notes}


@dataclass(frozen=True)
class _Pin:
    """A checkpoint whose claims we accept: ``seq`` must still hash to ``head``."""

    source: str
    seq: int
    head: str
    verified: bool


def _ever_our_credential_key(kid: str) -> bool:
    """A retired credential key of this node: its creation is in the (checked) audit log."""
    return AuditEntry.objects.filter(action="key.created", target_type="node_key", target_key=kid,
                                     data__purpose=Purpose.CREDENTIAL).exists()


def _pin(token: str, source: str, label: str, issuer: str, report: Report) -> _Pin | None:
    """Verify one checkpoint token with this node's credential keys; a problem (named by ``label``) when it
    is not ours."""
    verified = True
    try:
        claims = tokens.verify(token, tokens.AUDIT_CHECKPOINT, keys=keys.verification_keys(Purpose.CREDENTIAL),
                               issuer=issuer).claims
    except tokens.TokenError as exc:
        if exc.reason != "unknown_key":
            report.problems.append(Problem(None, f"{label}: not a checkpoint signed by this node "
                                                 f"({exc.reason}: {exc})"))
            return None
        header, claims = tokens.parse_unverified(token, tokens.AUDIT_CHECKPOINT)
        kid = header["kid"]
        stored = NodeKey.objects.filter(kid=kid, purpose=Purpose.CREDENTIAL).first()  # unpublished, not yet pruned
        if stored is not None:
            try:
                claims = tokens.verify(token, tokens.AUDIT_CHECKPOINT, keys=lambda _: [stored.public_jwk],
                                       issuer=issuer).claims
            except tokens.TokenError as again:
                report.problems.append(Problem(None, f"{label}: not a checkpoint signed by this node "
                                                     f"({again.reason}: {again})"))
                return None
        elif _ever_our_credential_key(kid):
            verified = False
            if claims.get("iss") != issuer:
                report.problems.append(Problem(None, f"{label}: issued by {claims.get('iss')!r}, not this node"))
                return None
        else:
            report.problems.append(Problem(None, f"{label}: signed by key {kid}, which was never a credential key "
                                                 "of this node (forged)"))
            return None
    seq, head = claims.get("seq"), claims.get("head")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0 or not isinstance(head, str) \
            or not _HEAD.match(head):
        report.problems.append(Problem(None, f"{label}: a checkpoint has an integer seq and a SHA-256 head"))
        return None
    if not verified:
        report.checkpoints_unverified += 1
    return _Pin(source, seq, head, verified)


def _walk(report: Report, wanted: set[int]) -> dict[int, str]:
    """Check every link and entry hash; return the stored hash of each entry in ``wanted``."""
    found: dict[int, str] = {}
    expected_seq, expected_prev = 1, audit.GENESIS_HASH
    for entry in AuditEntry.objects.order_by("seq").iterator(chunk_size=2000):
        report.entries += 1
        if entry.seq > expected_seq:
            missing = f"entry {expected_seq} is" if entry.seq == expected_seq + 1 else \
                f"entries {expected_seq}..{entry.seq - 1} are"
            report.problems.append(Problem(expected_seq, f"{missing} missing (deleted from the chain)"))
        elif entry.seq < expected_seq:
            report.problems.append(Problem(entry.seq, f"entry {entry.seq} is out of sequence"))
        elif entry.prev_hash != expected_prev:
            report.problems.append(Problem(entry.seq, f"entry {entry.seq}: prev_hash does not match the hash of "
                                                      f"entry {entry.seq - 1} (the link was changed)"))
        if audit.entry_hash(entry) != entry.hash:
            report.problems.append(Problem(entry.seq, f"entry {entry.seq} was edited: its content (actor, action, "
                                                      "target, data or time) no longer matches its hash"))
        if entry.seq in wanted:
            found[entry.seq] = entry.hash
        expected_seq, expected_prev = entry.seq + 1, entry.hash
    report.head = expected_seq - 1
    return found


def _compare(report: Report, pins: list[_Pin], found: dict[int, str]) -> None:
    """Each checkpoint's seq must still hash to its head. A mismatch means the entries between the last
    checkpoint that still matches and this one were changed and the chain re-hashed over them."""
    matched: list[int] = []
    for pin in sorted(pins, key=lambda p: p.seq):
        report.checkpoints_checked += 1
        label = f"{pin.source} checkpoint {pin.seq}" + ("" if pin.verified else " (signature not checkable)")
        current = audit.GENESIS_HASH if pin.seq == 0 else found.get(pin.seq)
        if current is None:
            if pin.seq > report.head:
                first = report.head + 1
                what = f"entry {first}" if first == pin.seq else f"entries {first}..{pin.seq}"
                report.problems.append(Problem(first, f"{what} deleted: {label} covers up to {pin.seq} but the log "
                                                      f"ends at {report.head}"))
            else:
                report.problems.append(Problem(pin.seq, f"entry {pin.seq} deleted: {label} covers it"))
        elif current != pin.head:
            start = max((s for s in matched if s < pin.seq), default=0) + 1
            where = f"entry {start}" if start == pin.seq else \
                f"an entry in {start}..{pin.seq} (checkpoint {start - 1} still matches)"
            report.problems.append(Problem(start, f"{where} was changed and the chain re-hashed: {label} signed head "
                                                  f"{pin.head[:16]}... but entry {pin.seq} now hashes to "
                                                  f"{current[:16]}..."))
        else:
            matched.append(pin.seq)


def verify(*, extra: Iterable[tuple[str, str]] = ()) -> Report:
    """Walk the audit chain and check it against every stored checkpoint and the ``(source, token)``
    pairs in ``extra`` (e.g. the checkpoints the superior kept of this node)."""
    report = Report()
    superior = Peer.objects.filter(relation=Peer.Relation.SUPERIOR).first()
    report.superior = superior.entity_id if superior else None
    extra = list(extra)
    rows = list(AuditCheckpoint.objects.order_by("seq"))
    pins: list[_Pin] = []
    if rows or extra:
        issuer = this_node().entity_id
        for row in rows:
            pin = _pin(row.token, "local", f"local checkpoint {row.seq}", issuer, report)
            if pin is not None and (pin.seq, pin.head) != (row.seq, row.head):
                report.problems.append(Problem(None, f"local checkpoint {row.seq}: its seq/head columns differ "
                                                     "from its signed token (the row was edited)"))
            if pin is not None:
                pins.append(pin)
        for source, token in extra:
            pin = _pin(token, source, source, issuer, report)
            if pin is not None:
                pins.append(pin)
    found = _walk(report, {p.seq for p in pins})
    _compare(report, pins, found)
    if report.checkpoints_unverified:
        report.notes.append(f"{report.checkpoints_unverified} checkpoint(s) signed by a credential key this node no "
                            "longer publishes: signature not checked, seq/head compared anyway")
    if superior is not None and not extra:
        report.notes.append(f"not checked against the checkpoints {superior.entity_id} keeps of this node: export "
                            "them (PeerCheckpoint tokens) and pass --checkpoints FILE")
    if pins and report.head > max(p.seq for p in pins):
        newest = max(p.seq for p in pins)
        what = f"entry {report.head} is" if newest + 1 == report.head else f"entries {newest + 1}..{report.head} are"
        report.notes.append(f"{what} newer than every checkpoint: protected by the chain alone")
    elif not pins and report.entries:
        report.notes.append("no checkpoint: the whole log is protected by the chain alone")
    return report
