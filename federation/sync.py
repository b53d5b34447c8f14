"""The change-feed consumer (CONTRACT §8): pull a subordinate's signed pages, verify them, apply what
lies inside its delegation, keep the cursor in the same transaction, and notify our superior.

A page is applied in one transaction together with the new cursor, so a crash (or a killed worker)
mid-page rolls everything back and the next pull re-reads the same page; application is idempotent
(highest version wins), so nothing is lost or duplicated. A page that fails verification changes
nothing but the peer's error state and a violation entry.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from core import outbox
from identity import tokens
from registry import identifiers, mirror, mirror_batch
from registry.services import this_node

from . import chains, clients
from .models import Peer, PeerCheckpoint, Violation

log = logging.getLogger(__name__)
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")
PAGE_SIZE = getattr(settings, "CIR_SYNC_PAGE_SIZE", 500)
OPS = ("upsert", "retire")
_token_cache: dict[tuple[str, str], tuple[str, float]] = {}


class PageError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class PullReport:
    peer: str
    pages: int = 0
    applied: int = 0
    stale: int = 0
    skipped_unknown: int = 0
    violations: int = 0
    error: str | None = None
    cursor: int = 0
    busy: bool = False
    reasons: dict[str, int] = field(default_factory=dict)


def _token(token_endpoint: str, scope: str) -> str:
    cached = _token_cache.get((token_endpoint, scope))
    if cached and cached[1] > time.monotonic() + 15:
        return cached[0]
    token, expires_in = clients.access_token(token_endpoint, this_node().entity_id, scope)
    _token_cache[(token_endpoint, scope)] = (token, time.monotonic() + expires_in)
    return token


def forget_token(token_endpoint: str, scope: str) -> None:
    _token_cache.pop((token_endpoint, scope), None)


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MAX_SEQ = 2**63 - 1
TRANSPORT_FAILURES = frozenset({"unreachable", "timeout", "http_error", "unauthorized", "token_rejected"})


def verify_page(raw: str, peer: Peer | _PeerView, *, after: int, limit: int = 1000) -> dict[str, Any]:
    """Signature (the peer's pinned federation keys), typ, times, and the page's own consistency."""
    try:
        claims = tokens.verify(raw, tokens.CHANGE_PAGE, keys=lambda kid: peer.jwks, issuer=peer.entity_id).claims
    except tokens.TokenError as exc:
        raise PageError(f"page_{exc.reason}", str(exc)) from exc
    if not (isinstance(claims.get("epoch"), str) and claims["epoch"] and _int(claims.get("after"))
            and _int(claims.get("next")) and isinstance(claims.get("has_more"), bool)
            and isinstance(claims.get("changes"), list)):
        raise PageError("malformed_page", "a page has epoch, after, next, has_more and changes")
    changes = claims["changes"]
    if not (0 <= claims["after"] <= MAX_SEQ and 0 <= claims["next"] <= MAX_SEQ):
        raise PageError("malformed_page", "after and next are sequence numbers below 2^63")
    if claims["has_more"] and not changes:
        raise PageError("malformed_page", "an empty page cannot have more to follow")
    if len(changes) > limit:
        raise PageError("malformed_page", f"asked for at most {limit} changes, got {len(changes)}")
    if claims["after"] != after and claims["epoch"] == (peer.epoch or claims["epoch"]):
        raise PageError("page_mismatch", f"asked for changes after {after}, got a page after {claims['after']}")
    previous = claims["after"]
    for change in changes:
        if not isinstance(change, dict) or not _int(change.get("seq")) or change["seq"] <= previous \
                or change["seq"] > MAX_SEQ:
            raise PageError("non_monotonic", f"seq must increase strictly after {previous}")
        previous = change["seq"]
    if claims["next"] != (changes[-1]["seq"] if changes else claims["after"]):
        raise PageError("malformed_page", "next must be the last seq of the page")
    if len(changes) > 1000:
        raise PageError("malformed_page", "a page holds at most 1000 changes")
    return claims


def _shape_problem(change: Mapping[str, Any]) -> str | None:
    if not isinstance(change.get("type"), str) or change.get("op") not in OPS:
        return "an entry has a type and an op of upsert or retire"
    if not isinstance(change.get("key"), str) or not isinstance(change.get("authority"), str) \
            or not isinstance(change.get("record"), dict):
        return "an entry has a string key and authority and an object record"
    return None


def _violation_row(peer: Peer, change: Mapping[str, Any] | None, reason: str, detail: str) -> Violation:
    change = change or {}
    return Violation(peer=peer, seq=change.get("seq") if _int(change.get("seq")) else None,
                     type=str(change.get("type", ""))[:32], key=str(change.get("key", ""))[:255],
                     reason=reason[:64], detail=detail[:2000],
                     record=change.get("record") if isinstance(change.get("record"), dict) else None)


def _record_violation(peer: Peer, change: Mapping[str, Any] | None, reason: str, detail: str) -> None:
    _violation_row(peer, change, reason, detail).save()


def _authority_problem(peer: Peer, change: Mapping[str, Any], prefix: str,
                       known: dict[str, tuple[str, ...] | str]) -> str | None:
    """A relayed change names the node that owns its key (CONTRACT §3 ``authority``): that node's chain
    must run through the origin and its prefixes must cover the key. Checked once per node per page."""
    authority = change["authority"]
    record_authority = change["record"].get("authority")
    if record_authority is not None and record_authority != authority:
        return "the record names another authority than its entry"
    if authority == peer.entity_id:
        return None
    if authority not in known:
        try:
            chain = chains.chain_for(authority)
        except (chains.ChainError, clients.PeerError) as exc:
            known[authority] = f"no valid trust chain for {authority}: {exc}"
        else:
            issuers = {statement.get("iss") for statement in chain.statements}
            known[authority] = (tuple(chain.ucri_prefixes) if peer.entity_id in issuers
                                else f"{authority} is not below {peer.entity_id}")
    held = known[authority]
    if isinstance(held, str):
        return held
    if not any(identifiers.prefix_within(prefix, p) for p in held):
        return f"{authority} does not hold {prefix}"
    return None


def apply_page(peer: Peer, claims: Mapping[str, Any], report: PullReport,
               verify_credential: Callable[[Mapping[str, Any]], None] | None) -> None:
    """Apply a verified page's changes; the caller holds the transaction and saves the cursor.

    Each entry is checked here (shape, type, delegation, authority), then the page's catalog changes
    are applied together (``registry.mirror_batch``: per change the rules of ``mirror.apply``, written
    set-based); a refused change is a violation and the rest of the page still applies. The applied
    changes are relayed into our outbox in page order with one sequence draw."""
    now = timezone.now()
    changes = claims["changes"]
    authorities: dict[str, tuple[str, ...] | str] = {}
    refused: dict[int, tuple[str, str, bool]] = {}  # index -> reason, detail, counted in report.reasons
    accepted: list[int] = []
    for index, change in enumerate(changes):
        problem = _shape_problem(change)
        if problem is not None:
            refused[index] = ("malformed_entry", problem, False)
            continue
        if change["type"] not in mirror.KNOWN_TYPES:
            report.skipped_unknown += 1  # the feed may grow: skip and count, never fail
            continue
        try:
            prefix = mirror.key_prefix(change)
            if not any(identifiers.prefix_within(prefix, delegated) for delegated in peer.prefixes):
                raise mirror.MirrorViolation("outside_delegation",
                                             f"{prefix} lies outside {', '.join(peer.prefixes)}")
            problem = _authority_problem(peer, change, prefix, authorities)
            if problem is not None:
                raise mirror.MirrorViolation("invalid_authority", problem)
        except mirror.MirrorViolation as exc:
            refused[index] = (exc.reason, exc.detail, True)
            continue
        accepted.append(index)
    outcomes = mirror_batch.apply_changes([changes[i] for i in accepted], now=now,
                                          verify_credential=verify_credential)
    relay: list[outbox.Change] = []
    records: list[str | None] = []
    for index, outcome in zip(accepted, outcomes, strict=True):
        if outcome.status == mirror_batch.VIOLATION:
            refused[index] = (outcome.reason, outcome.detail, True)
        elif outcome.status == mirror.APPLIED:
            report.applied += 1
            if outcome.relay is not None:
                relay.append(outcome.relay)
                records.append(outcome.record)
        else:
            report.stale += 1
    for _, reason, counted in refused.values():
        report.violations += 1
        if counted:
            report.reasons[reason] = report.reasons.get(reason, 0) + 1
    if refused:
        Violation.objects.bulk_create([_violation_row(peer, changes[index], *refused[index][:2])
                                       for index in sorted(refused)])
    outbox.write_many(relay, records)  # one sequence draw per page; the page's transaction keeps the order


def _fail(peer: Peer, report: PullReport, reason: str, detail: str) -> PullReport:
    """Record a failed pull on the peer. A peer that is down is an error, not a violation; a page or
    configuration that fails verification is both."""
    lying = reason not in TRANSPORT_FAILURES
    with transaction.atomic():
        locked = Peer.objects.select_for_update().get(pk=peer.pk)
        if lying:
            _record_violation(locked, None, reason, detail)
            locked.violations += 1
        locked.last_error = f"{reason}: {detail}"[:2000]
        locked.consecutive_failures += 1
        locked.last_pull_at = timezone.now()
        locked.save()
    report.error = f"{reason}: {detail}"
    if lying:
        report.violations += 1
    log.warning("pull from %s failed: %s", peer.entity_id, report.error)
    return report


@dataclass(frozen=True)
class _PeerView:
    """What ``verify_page`` reads of a peer, for verifying outside the pulling thread."""

    entity_id: str
    jwks: list[dict[str, Any]]
    epoch: str


class _Ahead:
    """The next page, fetched and verified in a thread while this one is applied: the origin signs
    page N+1 and we check its signature while the database writes page N. No database access there;
    the pull takes the page only if the peer is still where the thread assumed (cursor, epoch, keys),
    and verifies it again itself otherwise."""

    def __init__(self, pool: ThreadPoolExecutor, endpoint: str, token: str, view: _PeerView, *, after: int,
                 limit: int) -> None:
        self.view, self.after, self.limit = view, after, limit
        self.future: Future[tuple[str, dict[str, Any] | None, PageError | None]] = pool.submit(
            contextvars.copy_context().run, self._fetch, endpoint, token)  # the thread keeps our request id

    def _fetch(self, endpoint: str, token: str) -> tuple[str, dict[str, Any] | None, PageError | None]:
        raw = clients.change_page(endpoint, token, after=self.after, limit=self.limit)
        try:
            return raw, verify_page(raw, self.view, after=self.after, limit=self.limit), None
        except PageError as exc:
            return raw, None, exc

    def take(self, locked: Peer) -> dict[str, Any] | None:
        """The verified claims of the page after ``locked.cursor``, or None to fetch it afresh."""
        if locked.cursor != self.after:
            self.future.cancel()
            return None
        raw, claims, error = self.future.result()  # a failed fetch raises its PeerError here
        if (locked.entity_id, locked.jwks, locked.epoch) != (self.view.entity_id, self.view.jwks, self.view.epoch):
            return verify_page(raw, locked, after=locked.cursor, limit=self.limit)
        if error is not None:
            raise error
        return claims


def pull(peer: Peer, *, page_size: int = PAGE_SIZE, max_pages: int | None = None,
         on_page: Callable[[PullReport, int], None] | None = None) -> PullReport:
    """Pull pages from ``peer`` until it has no more (or ``max_pages``)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cir-page-ahead")
    try:
        return _pull(peer, pool, page_size=page_size, max_pages=max_pages, on_page=on_page)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _pull(peer: Peer, pool: ThreadPoolExecutor, *, page_size: int, max_pages: int | None,
          on_page: Callable[[PullReport, int], None] | None) -> PullReport:
    report = PullReport(peer=peer.entity_id, cursor=peer.cursor)
    try:
        chains.refresh_peer(peer)
    except (chains.ChainError, clients.PeerError) as exc:
        return _fail(peer, report, getattr(exc, "reason", "configuration"), str(exc))
    peer.refresh_from_db()
    verify_credential = chains.credential_verifier()
    epoch_resets = token_retries = 0
    ahead: _Ahead | None = None
    while max_pages is None or report.pages < max_pages:
        try:
            with transaction.atomic():
                locked = Peer.objects.select_for_update(skip_locked=True).filter(pk=peer.pk).first()
                if locked is None:
                    report.busy = True  # another worker is pulling this peer
                    return report
                token = _token(locked.metadata["token_endpoint"], "federation:sync")
                claims, ahead = (ahead.take(locked) if ahead is not None else None), None
                if claims is None:
                    raw = clients.change_page(locked.metadata["change_feed_endpoint"], token, after=locked.cursor,
                                              limit=page_size)
                    claims = verify_page(raw, locked, after=locked.cursor, limit=page_size)
                if locked.epoch and claims["epoch"] != locked.epoch:
                    # The origin's history restarted: re-read from 0 (idempotent), once per pull.
                    epoch_resets += 1
                    if epoch_resets > 1:
                        raise PageError("epoch_unstable", "the epoch changed again within one pull")
                    log.warning("%s changed epoch %s -> %s; re-reading", locked.entity_id, locked.epoch,
                                claims["epoch"])
                    locked.epoch, locked.cursor = claims["epoch"], 0
                    locked.save(update_fields=["epoch", "cursor"])
                    continue
                if claims["has_more"] and (max_pages is None or report.pages + 1 < max_pages):
                    view = _PeerView(locked.entity_id, locked.jwks, claims["epoch"])
                    ahead = _Ahead(pool, locked.metadata["change_feed_endpoint"], token, view, after=claims["next"],
                                   limit=page_size)
                apply_page(locked, claims, report, verify_credential)
                locked.epoch = claims["epoch"]
                locked.cursor = claims["next"]
                locked.origin_head = max(locked.origin_head, claims["next"])
                now = timezone.now()
                locked.last_pull_at = locked.last_success_at = now
                locked.last_error, locked.consecutive_failures = "", 0
                locked.save()
                report.pages += 1
                report.cursor = locked.cursor
        except PageError as exc:
            return _fail(peer, report, exc.reason, exc.detail)
        except clients.PeerError as exc:
            if exc.reason == "token_rejected" and token_retries == 0:
                token_retries += 1  # our cached token expired early or the peer restarted: once more
                forget_token(peer.metadata["token_endpoint"], "federation:sync")
                continue
            return _fail(peer, report, exc.reason, str(exc))
        except DatabaseError as exc:  # never silent: the admin shows it, the other peers still sync
            log.exception("pull from %s failed in the database", peer.entity_id)
            return _fail(peer, report, "internal_error", f"{exc.__class__.__name__}: {exc}"[:500])
        if on_page is not None:
            on_page(report, peer.origin_head)
        if not claims["has_more"]:
            break
    _store_counters(peer, report)
    if report.pages:
        keep_checkpoint(peer)
    return report


def keep_checkpoint(peer: Peer) -> PeerCheckpoint | None:
    """Fetch and keep the peer's latest audit checkpoint (CONTRACT §8). A checkpoint that goes back
    in seq, or names another head for a seq we hold, is a violation: the peer's audit log changed."""
    endpoint = peer.metadata.get("audit_checkpoint_endpoint") or f"{peer.metadata.get('api_base')}/audit/" \
        "checkpoints/latest"
    try:
        raw = clients.fetch_jwt(endpoint, "audit-checkpoint+jwt")
        api_keys = chains.signed_api_keys(peer.entity_id, "credential")
        claims = tokens.verify(raw, tokens.AUDIT_CHECKPOINT, keys=lambda kid: api_keys, issuer=peer.entity_id).claims
    except (clients.PeerError, chains.ChainError, tokens.TokenError) as exc:
        log.warning("no audit checkpoint from %s: %s", peer.entity_id, exc)
        return None
    seq, head = claims.get("seq"), claims.get("head")
    if not _int(seq) or seq < 0 or not isinstance(head, str) or not _SHA256_HEX.match(head):
        _checkpoint_violation(peer, "invalid_checkpoint", "a checkpoint has an integer seq and a SHA-256 head")
        return None
    latest = peer.checkpoints.order_by("-seq").first()
    same_seq = peer.checkpoints.filter(seq=seq).first()
    if (same_seq is not None and same_seq.head != head) or (latest is not None and seq < latest.seq):
        _checkpoint_violation(peer, "audit_log_changed", f"checkpoint {seq}/{head} contradicts what we kept")
        return None
    if same_seq is not None:
        return same_seq
    kept, created = PeerCheckpoint.objects.get_or_create(peer=peer, seq=seq, defaults={"head": head, "token": raw})
    if not created and kept.head != head:  # a concurrent pull kept another head for this seq
        _checkpoint_violation(peer, "audit_log_changed", f"checkpoint {seq}/{head} contradicts what we kept")
        return None
    return kept


def _checkpoint_violation(peer: Peer, reason: str, detail: str) -> None:
    """Kept in the violation log and counted on the peer (admin, metrics), and logged loudly: a
    subordinate whose audit log changed under a signed checkpoint needs a person."""
    from django.db.models import F

    log.error("audit checkpoint from %s: %s: %s", peer.entity_id, reason, detail)
    _record_violation(peer, None, reason, detail)
    Peer.objects.filter(pk=peer.pk).update(violations=F("violations") + 1)


def _store_counters(peer: Peer, report: PullReport) -> None:
    from django.db.models import F

    Peer.objects.filter(pk=peer.pk).update(applied=F("applied") + report.applied, stale=F("stale") + report.stale,
                                           skipped_unknown=F("skipped_unknown") + report.skipped_unknown,
                                           violations=F("violations") + report.violations)


def pull_all(**kwargs: Any) -> list[PullReport]:
    return [pull(peer, **kwargs) for peer in Peer.objects.filter(relation=Peer.Relation.SUBORDINATE)]


def request_pull(peer: Peer, seq: int) -> None:
    """A subordinate said it has changes up to ``seq``: pull soon (a task where a broker exists)."""
    # ``seq`` is only a hint to pull now; lag is measured from signed pages, never from a notify.
    Peer.objects.filter(pk=peer.pk).update(pull_requested_at=timezone.now())
    if settings.CELERY_BROKER_URL:
        from .tasks import pull_subordinate

        transaction.on_commit(lambda: pull_subordinate.delay(peer.pk))
    # Without a broker, cir_sync --loop picks the request up: never pull inside this request.


def notify_superior() -> bool:
    """Tell our superior our feed has grown (CONTRACT §8 notify). Returns True when a notify was sent."""
    from registry.models import Availability

    superior = Peer.objects.filter(relation=Peer.Relation.SUPERIOR).first()
    head = outbox.head()
    if superior is None or "notify_endpoint" not in superior.metadata:
        return False
    # Availability enters the feed when the superior pulls (coalesced), so pending reports count too.
    if head <= superior.notified_seq and not Availability.objects.filter(unpublished=True).exists():
        return False
    token = _token(superior.metadata["token_endpoint"], "federation:notify")
    clients.notify(superior.metadata["notify_endpoint"], token, head)
    Peer.objects.filter(pk=superior.pk, notified_seq__lt=head).update(notified_seq=head)
    return True


def due_for_pull(peer: Peer, *, interval: dt.timedelta) -> bool:
    if peer.pull_requested_at and (peer.last_pull_at is None or peer.pull_requested_at >= peer.last_pull_at):
        return True
    return peer.last_pull_at is None or timezone.now() - peer.last_pull_at >= interval
