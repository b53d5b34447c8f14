"""Liveness and readiness (CONTRACT §12).

Liveness (``/healthz``) says the process answers; it checks nothing else, so an orchestrator restarts
a wedged worker but never every worker because a shared dependency is down.

Readiness (``/readyz``) says whether this instance can do its job now. Each check is cheap and local:
one ``SELECT 1``, one cache read, a few indexed reads of small tables, one broker connection (only
when a broker is configured). Nothing calls another node: the trust chain comes from the chain cache
that the sync and the hourly ``refresh_peers`` task fill (``federation.chains.chain_for``) and from
what the last verification recorded on the superior's row. A probe every few seconds therefore costs
milliseconds and cannot hang on a slow peer.

Checks, in order:
- ``database``: the default database answers ``SELECT 1``.
- ``cache``: the shared cache (rate limits, replay caches, idempotency keys, chains) answers a read.
- ``broker``: the Celery broker accepts a connection; ``not_configured`` (passing) without
  ``CELERY_BROKER_URL``, where tasks run eagerly.
- ``keys``: the node is initialised, and for every purpose (access tokens, credentials, handoffs,
  federation) it holds an active signing key whose private half decrypts with
  ``CIR_KEY_ENCRYPTION_KEY``.
- ``trust_chain``: a node with a superior holds a pinned trust anchor and a chain to it that is valid
  now: the cached chain, or while none is cached, the superior's configuration as last verified
  through the chain (``Peer.configuration_expires_at``); a verification failure recorded since wins.
  A node without a superior anchors its own chains and passes. Subordinates' chains are not part of
  readiness: a broken subordinate only stops that subordinate's sync (per-peer metrics and alerts).

Checks that need the database are ``skipped`` when it is down (not ready, but only ``database`` is
named as failing). Failure details name the part
and a reason code, never addresses or secrets; the full error is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils import timezone

log = logging.getLogger(__name__)

OK, FAILING, SKIPPED, NOT_CONFIGURED = "ok", "failing", "skipped", "not_configured"
PASSING = frozenset({OK, NOT_CONFIGURED})
CHECKS = ("database", "cache", "broker", "keys", "trust_chain")
BROKER_TIMEOUT = 2.0  # seconds: a probe must answer within the orchestrator's timeout


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | failing | skipped | not_configured
    detail: str = ""

    @property
    def passing(self) -> bool:
        return self.status in PASSING

    def as_dict(self) -> dict[str, str]:
        return {"status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(check.passing for check in self.checks)

    @property
    def failing(self) -> list[str]:
        """The parts that failed (checks skipped because another part failed are not named)."""
        return [check.name for check in self.checks if check.status == FAILING]

    def as_dict(self) -> dict:
        return {"status": "ready" if self.ready else "unavailable", "failing": self.failing,
                "checks": {check.name: check.as_dict() for check in self.checks}}


def _connection():
    return connections[DEFAULT_DB_ALIAS]


def _failed(name: str, detail: str, exc: BaseException) -> Check:
    log.warning("readiness: %s failing: %s", name, exc, exc_info=not isinstance(exc, DatabaseError))
    return Check(name, FAILING, f"{detail} ({type(exc).__name__})")


def database() -> Check:
    try:
        with _connection().cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means not ready
        return _failed("database", "unreachable", exc)
    return Check("database", OK)


def shared_cache() -> Check:
    try:
        cache.get("cir:readyz:probe")
    except Exception as exc:  # redis down, the cache table missing, ...
        return _failed("cache", "unreachable", exc)
    return Check("cache", OK)


def broker() -> Check:
    url = getattr(settings, "CELERY_BROKER_URL", None)
    if not url:
        return Check("broker", NOT_CONFIGURED, "no CELERY_BROKER_URL: tasks run eagerly in the process")
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=BROKER_TIMEOUT) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT)
    except Exception as exc:  # kombu wraps every transport's errors differently
        return _failed("broker", "unreachable", exc)
    return Check("broker", OK)


def node_keys(now: dt.datetime | None = None) -> Check:
    from identity import keys
    from identity.models import NodeKey, Purpose
    from registry.selectors import self_node

    now = now or timezone.now()
    if self_node() is None:
        return Check("keys", FAILING, "node not initialised (run cir_node_init)")
    purposes = (*keys.API_PURPOSES, Purpose.FEDERATION)
    active: dict[str, NodeKey] = {}
    for key in NodeKey.objects.filter(activates_at__lte=now).order_by("purpose", "-activates_at"):
        active.setdefault(key.purpose, key)
    missing = [str(p) for p in purposes if p not in active]
    if missing:
        return Check("keys", FAILING, "no active signing key for " + ", ".join(missing))
    try:
        for purpose in purposes:
            keys.private_key(active[purpose])  # memoised per process: decrypted once
    except Exception as exc:  # RuntimeError (wrong Fernet key) or a corrupt PEM
        return _failed("keys", "private keys do not decrypt with CIR_KEY_ENCRYPTION_KEY", exc)
    return Check("keys", OK, f"{len(purposes)} purposes with an active key")


def trust_chain(now: dt.datetime | None = None) -> Check:
    from federation import chains, overview, trust
    from federation.models import Peer, TrustAnchor

    now = now or timezone.now()
    superior = Peer.objects.filter(relation=Peer.Relation.SUPERIOR).first()
    if superior is None:
        return Check("trust_chain", OK, "no superior: this node anchors its own chains")
    if not TrustAnchor.objects.exists():
        return Check("trust_chain", FAILING, "no trust anchor pinned")
    try:
        cached = cache.get(chains.CACHE_PREFIX + superior.entity_id)
    except Exception as exc:
        return _failed("trust_chain", "the chain cache cannot be read", exc)
    state = overview.chain_state(superior, cached if isinstance(cached, trust.TrustChain) else None, now)
    if state.state == overview.VALID:
        return Check("trust_chain", OK, f"valid until {state.expires_at.isoformat()} (anchor {state.anchor})")
    if state.state == overview.INVALID:
        return Check("trust_chain", FAILING, f"invalid: {state.reason}")
    if state.state == overview.EXPIRED:
        return Check("trust_chain", FAILING, f"expired at {state.expires_at.isoformat()}")
    expires = superior.configuration_expires_at
    if expires is not None and expires > now:
        return Check("trust_chain", OK, f"not cached; last verified, valid until {expires.isoformat()}")
    return Check("trust_chain", FAILING, "not verified: no cached chain and the superior's configuration "
                 "has expired (is refresh_peers running?)")


_NEEDS_DATABASE = {"keys": node_keys, "trust_chain": trust_chain}
_INDEPENDENT: dict[str, Callable[[], Check]] = {"cache": shared_cache, "broker": broker}


def readiness(*, exclude: Iterable[str] = ()) -> Readiness:
    """Run every check but the excluded ones (names of ``CHECKS``)."""
    skip = set(exclude)
    results: list[Check] = []
    db = database() if "database" not in skip else None
    for name in CHECKS:
        if name in skip:
            continue
        if name == "database":
            results.append(db)
        elif name in _INDEPENDENT:
            results.append(_INDEPENDENT[name]())
        elif db is not None and not db.passing:
            results.append(Check(name, SKIPPED, "needs the database"))
        else:
            try:
                results.append(_NEEDS_DATABASE[name]())
            except Exception as exc:  # a query failing half-way through: not ready, never a 500
                results.append(_failed(name, "check failed", exc))
    return Readiness(tuple(results))
