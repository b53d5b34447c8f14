"""Prometheus metrics (CONTRACT §12): what this process counts, what the node's database says about the
node, and the compute network's indicators. Every family is listed, with its labels, in
docs/operations.md ("Monitoring").

Three sources:
- Instruments: counters and a histogram this process updates as requests pass (``middleware``).
  Under gunicorn each worker counts its own; with ``PROMETHEUS_MULTIPROC_DIR`` set in the environment
  before the process starts, prometheus-client keeps them in files in that directory and a scrape of
  any worker adds up every worker's (prometheus-client's multiprocess mode).
- ``NodeCollector``: the node itself, read from its database at each scrape: signing keys, provider
  credentials, outbox, handoffs, and per peer the sync cursor, lag, last success, failures,
  violations and trust chain. These describe the node, not the process: every worker (and every
  instance of the node) reports the same values, so aggregate them with ``max``, never ``sum``.
- ``ComputeCollector``: the national compute indicators from ``registry.indicators.current()``, the
  same cached figures the dashboard shows, so /metrics and /dashboard always agree.

Labels are bounded: route patterns, methods, status classes, outcome codes, key purposes, peers'
entity IDs, kinds, hub and province codes, accelerator model groups, price units. Never a UCRI, a
provider prefix, a client ID or a raw path.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator

from django.db.models import Case, CharField, Count, F, Min, Q, Value, When
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXPIRING_WITHIN = dt.timedelta(days=7)
HANDOFF_WINDOW = dt.timedelta(hours=1)
OUTSIDE_HUBS = "none"  # the hub label of provinces outside every national hub
OTHER_MODELS = "other"  # the model_group label of accelerator models outside the reference table
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Instruments ---------------------------------------------------------------------------------------

INSTRUMENTS = CollectorRegistry(auto_describe=True)
HTTP_REQUESTS = Counter("cir_http_requests", "HTTP requests answered, by route pattern, method and status class.",
                        ["route", "method", "status"], registry=INSTRUMENTS)
HTTP_DURATION = Histogram("cir_http_request_duration_seconds",
                          "Time to answer an HTTP request (to the response headers), by route pattern and method.",
                          ["route", "method"], buckets=LATENCY_BUCKETS, registry=INSTRUMENTS)
OAUTH_TOKENS = Counter("cir_oauth_tokens", "Token endpoint requests by outcome: issued, or the OAuth error code.",
                       ["outcome"], registry=INSTRUMENTS)
ACCESS_TOKENS = Counter("cir_access_tokens", "Bearer access tokens presented to the API, by outcome: accepted, "
                        "rejected (401) or insufficient_scope (403).", ["outcome"], registry=INSTRUMENTS)
HANDOFF_REQUESTS = Counter("cir_handoff_requests", "Handoff ticket requests by outcome: issued, or the refusal's "
                           "problem code.", ["outcome"], registry=INSTRUMENTS)
HANDOFF_ACKS = Counter("cir_handoff_acks", "Handoff acknowledgements by outcome: accepted, rejected, or the "
                       "refusal's problem code (handoff_expired, already_acknowledged, ...).", ["outcome"],
                       registry=INSTRUMENTS)
# The usual outcomes start at 0, so rates and ratios exist before the first of each happens.
for _counter, _outcomes in ((OAUTH_TOKENS, ("issued", "invalid_client")), (HANDOFF_REQUESTS, ("issued",)),
                            (ACCESS_TOKENS, ("accepted", "rejected", "insufficient_scope")),
                            (HANDOFF_ACKS, ("accepted", "rejected", "handoff_expired"))):
    for _outcome in _outcomes:
        _counter.labels(_outcome)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class _Instruments:
    """This process's instruments, or every worker's added up from the multiprocess directory."""

    def collect(self) -> Iterator[Metric]:
        if multiprocess_dir():
            yield from _multiprocess.MultiProcessCollector(None).collect()
        else:
            yield from INSTRUMENTS.collect()


# Helpers -------------------------------------------------------------------------------------------

def _timestamp(value: dt.datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


def _hub(code: str | None) -> str:
    return code or OUTSIDE_HUBS


class _Guarded:
    """A source of families read from the database or the cache at each scrape."""

    name = ""

    def families(self, now: dt.datetime) -> Iterable[Metric]:
        raise NotImplementedError


class _Guard:
    """Collects each source in turn; one that fails costs its own families, never the scrape: it reports
    ``cir_scrape_collector_success{collector}`` 0 and /metrics still answers (with readiness)."""

    def __init__(self, sources: Iterable[_Guarded]) -> None:
        self.sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily("cir_scrape_collector_success",
                                    "1 when a collector read its figures for this scrape, 0 when it failed.",
                                    labels=["collector"])
        now = timezone.now()
        for source in self.sources:
            try:
                produced = list(source.families(now))
            except Exception:
                log.exception("metrics: the %s collector failed", source.name)
                success.add_metric([source.name], 0.0)
                continue
            success.add_metric([source.name], 1.0)
            yield from produced
        yield success


# The node ------------------------------------------------------------------------------------------

class NodeCollector(_Guarded):
    name = "node"

    def families(self, now: dt.datetime) -> Iterable[Metric]:
        yield from self._node()
        yield from self._keys(now)
        yield from self._credentials(now)
        yield from self._outbox()
        yield from self._handoffs(now)
        yield from self._peers(now)

    def _node(self) -> Iterable[Metric]:
        from registry.selectors import self_node

        info = GaugeMetricFamily("cir_node_info", "This node (1): entity ID, role and prefix.",
                                 labels=["entity_id", "role", "prefix"])
        node = self_node()
        if node is not None:
            info.add_metric([node.entity_id, node.role, node.prefix], 1)
        yield info

    def _keys(self, now: dt.datetime) -> Iterable[Metric]:
        from identity import keys
        from identity.models import NodeKey, Purpose

        due = GaugeMetricFamily(
            "cir_node_key_rotation_due_seconds",
            "Seconds until the newest signing key of a purpose (a published successor counts) reaches the end "
            "of its rotation period; negative when overdue. rotation=automatic: the hourly task rotates it; "
            "ceremony: an operator does (cir_keys_rotate).", labels=["purpose", "rotation"])
        activated = GaugeMetricFamily("cir_node_key_activated_timestamp_seconds",
                                      "When the signing key in use for a purpose started signing (Unix time).",
                                      labels=["purpose"])
        successor = GaugeMetricFamily("cir_node_key_successor_pending",
                                      "1 when a successor key is published and waiting to activate.",
                                      labels=["purpose"])
        by_purpose: dict[str, list[NodeKey]] = {}
        for key in NodeKey.objects.order_by("-activates_at"):
            by_purpose.setdefault(key.purpose, []).append(key)
        for purpose in Purpose.values:
            found = by_purpose.get(purpose, [])
            active = next((k for k in found if k.activates_at <= now), None)
            newest = found[0] if found else None
            if active is None or newest is None:
                continue
            rotation = "automatic" if purpose in keys.API_PURPOSES else "ceremony"
            end = newest.activates_at + keys.ROTATION_PERIOD[purpose]
            due.add_metric([purpose, rotation], (end - now).total_seconds())
            activated.add_metric([purpose], _timestamp(active.activates_at))
            successor.add_metric([purpose], 1.0 if newest.activates_at > now else 0.0)
        yield from (due, activated, successor)

    def _credentials(self, now: dt.datetime) -> Iterable[Metric]:
        from identity.models import ProviderCredential
        from registry.models import Provider

        effective = Case(
            When(credential_status__isnull=True, then=Value("none")),
            When(credential_status="revoked", then=Value("revoked")),
            When(credential_expires_at__lte=now, then=Value("expired")),
            default=F("credential_status"), output_field=CharField())
        counts = GaugeMetricFamily("cir_provider_credentials",
                                   "Providers by their current credential's status (expired once its exp has "
                                   "passed; none before one is issued).", labels=["source", "status"])
        for row in (Provider.objects.annotate(effective=effective).values("source", "effective")
                    .annotate(n=Count("pk")).order_by()):
            counts.add_metric([row["source"], row["effective"]], row["n"])
        yield counts

        live = Provider.objects.filter(status=Provider.Status.ACTIVE, credential_status="valid",
                                       credential_expires_at__isnull=False)
        horizon = GaugeMetricFamily(
            "cir_provider_credential_expiry_seconds",
            "Seconds until the soonest expiry among active providers' current valid credentials (negative: "
            "one has expired).", labels=["source"])
        expiring = GaugeMetricFamily(
            "cir_provider_credentials_expiring_7d",
            "Active providers whose current valid credential expires within 7 days (or has expired).",
            labels=["source"])
        soon = now + EXPIRING_WITHIN
        for row in (live.values("source").annotate(
                soonest=Min("credential_expires_at"),
                expiring=Count("pk", filter=Q(credential_expires_at__lte=soon))).order_by()):
            horizon.add_metric([row["source"]], (row["soonest"] - now).total_seconds())
            expiring.add_metric([row["source"]], row["expiring"])
        yield from (horizon, expiring)

        issued = CounterMetricFamily("cir_provider_credentials_issued",
                                     "Provider credentials this node has signed (issued and renewed).")
        issued.add_metric([], ProviderCredential.objects.count())
        yield issued

    def _outbox(self) -> Iterable[Metric]:
        from core import outbox
        from core.models import OutboxEntry
        from federation.models import Peer

        head = outbox.head()
        yield GaugeMetricFamily("cir_outbox_head_seq", "The seq of the newest change in this node's outbox "
                                "(its change feed).", value=head)
        yield GaugeMetricFamily("cir_outbox_entries", "Changes held in the outbox.",
                                value=OutboxEntry.objects.count())
        unannounced = GaugeMetricFamily("cir_outbox_unannounced_seq",
                                        "Outbox changes past the head last announced to the superior (notify).")
        superior = Peer.objects.filter(relation=Peer.Relation.SUPERIOR).first()
        if superior is not None:
            unannounced.add_metric([], max(0, head - superior.notified_seq))
        yield unannounced

    def _handoffs(self, now: dt.datetime) -> Iterable[Metric]:
        from scheduling.models import Handoff

        outstanding = Handoff.objects.filter(status=Handoff.Status.ISSUED, expires_at__gt=now).count()
        yield GaugeMetricFamily("cir_handoffs_outstanding", "Issued handoff tickets not yet acknowledged or expired.",
                                value=outstanding)
        recent = GaugeMetricFamily(
            "cir_handoffs_last_hour",
            "Handoffs whose ticket expires after one hour ago (issued in about the last hour), by status: issued, "
            "accepted, rejected, expired.", labels=["status"])
        found = dict(Handoff.objects.filter(expires_at__gt=now - HANDOFF_WINDOW).values_list("status")
                     .annotate(n=Count("pk")).order_by())
        for status in Handoff.Status.values:
            recent.add_metric([status], found.get(status, 0))
        yield recent

    def _peers(self, now: dt.datetime) -> Iterable[Metric]:
        from django.core.cache import cache

        from federation import chains, overview, trust
        from federation.models import Peer

        labels = ["peer", "relation"]

        def gauge(name: str, text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=labels)

        lag_seq = gauge("cir_peer_lag_seq", "Changes the subordinate's feed holds past our cursor, as its signed "
                        "pages reported (origin head - cursor).")
        lag_seconds = gauge("cir_peer_lag_seconds",
                            "Seconds we have been behind the subordinate: since it notified changes we have not yet "
                            "pulled, or since the last success while its pages report more; 0 when caught up.")
        cursor = gauge("cir_peer_cursor_seq", "The seq of the subordinate's feed we have applied up to.")
        last_success = gauge("cir_peer_last_success_timestamp_seconds",
                             "When the last pull from the subordinate succeeded (Unix time; 0: never).")
        failures = gauge("cir_peer_consecutive_failures", "Failed pulls or refreshes in a row (0 after a success).")
        violations = CounterMetricFamily("cir_peer_violations", "Changes refused from the peer (outside its "
                                         "delegation, bad signatures, a changed audit log...).", labels=labels)
        applied = CounterMetricFamily("cir_peer_applied_changes", "Changes applied from the subordinate's feed.",
                                      labels=labels)
        chain_valid = gauge("cir_peer_trust_chain_valid",
                            "1 when the peer's trust chain, as last built and cached, is valid now; 0 when invalid, "
                            "expired or not resolved yet (see the state label of cir_peer_trust_chain_state).")
        chain_state = GaugeMetricFamily("cir_peer_trust_chain_state", "1 for the state the peer's trust chain is in: "
                                        "valid, expired, invalid or unknown (not resolved yet).",
                                        labels=[*labels, "state"])
        chain_expiry = gauge("cir_peer_trust_chain_expiry_timestamp_seconds",
                             "The earliest exp among the statements of the peer's cached chain (Unix time).")

        peers = list(Peer.objects.order_by("relation", "entity_id"))
        cached = cache.get_many([chains.CACHE_PREFIX + p.entity_id for p in peers]) if peers else {}
        for peer in peers:
            key = [peer.entity_id, peer.relation]
            chain = cached.get(chains.CACHE_PREFIX + peer.entity_id)
            state = overview.chain_state(peer, chain if isinstance(chain, trust.TrustChain) else None, now)
            chain_valid.add_metric(key, 1.0 if state.state == overview.VALID else 0.0)
            for name in (overview.VALID, overview.EXPIRED, overview.INVALID, overview.UNKNOWN):
                chain_state.add_metric([*key, name], 1.0 if state.state == name else 0.0)
            if state.expires_at is not None:
                chain_expiry.add_metric(key, state.expires_at.timestamp())
            failures.add_metric(key, peer.consecutive_failures)
            violations.add_metric(key, peer.violations)
            if peer.relation != Peer.Relation.SUBORDINATE:
                continue  # we do not pull our superior: it pulls us
            lag_seq.add_metric(key, peer.lag)
            lag_seconds.add_metric(key, peer_lag_seconds(peer, now))
            cursor.add_metric(key, peer.cursor)
            last_success.add_metric(key, _timestamp(peer.last_success_at))
            applied.add_metric(key, peer.applied)
        yield from (lag_seq, lag_seconds, cursor, last_success, failures, violations, applied, chain_valid,
                    chain_state, chain_expiry)


def peer_lag_seconds(peer, now: dt.datetime) -> float:
    """How long we have known we are behind a subordinate: since a notify we have not pulled after, or
    (when its signed pages report more than we hold) since our last success; 0 when caught up."""
    behind_since = None
    if peer.pull_requested_at and (peer.last_success_at is None or peer.pull_requested_at > peer.last_success_at):
        behind_since = peer.pull_requested_at
    elif peer.lag > 0:
        behind_since = peer.last_success_at or peer.created_at
    return max(0.0, (now - behind_since).total_seconds()) if behind_since is not None else 0.0


# The compute network -------------------------------------------------------------------------------

class ComputeCollector(_Guarded):
    """The dashboard's national indicators (docs/dashboard.md), from the same cache."""

    name = "compute"

    def __init__(self, current: Callable | None = None) -> None:
        self._current = current

    def families(self, now: dt.datetime) -> Iterable[Metric]:
        from registry import indicators

        data = (self._current or indicators.current)()
        yield GaugeMetricFamily("cir_compute_indicators_computed_timestamp_seconds",
                                "When the compute indicators were computed (they are cached for 60 s).",
                                value=data.computed_at.timestamp())
        groups = (("kind", "kind", data.by_kind.items()),
                  ("hub", "hub", ((_hub(k), v) for k, v in data.by_hub.items())),
                  ("province", "province", data.by_province.items()))
        for suffix, label, items in groups:
            items = sorted(items, key=lambda item: item[0])
            resources = GaugeMetricFamily(
                f"cir_compute_resources_by_{suffix}",
                f"Installed (active and suspended, not retired) resources by {label} and status, local and mirrored.",
                labels=[label, "status"])
            eflops = GaugeMetricFamily(
                f"cir_compute_eflops_by_{suffix}",
                f"Peak compute in EFLOPS by {label} and precision (fp64, fp32, fp16; native: each kind at its own "
                "precision), over installed resources publishing the figure.", labels=[label, "precision"])
            for code, scale in items:
                resources.add_metric([code, "active"], scale.active)
                resources.add_metric([code, "suspended"], scale.suspended)
                for precision in indicators.PRECISIONS:
                    tflops = getattr(scale, f"{precision}_tflops")
                    eflops.add_metric([code, precision], tflops / indicators.TFLOPS_PER_EFLOPS)
                eflops.add_metric([code, "native"], scale.native_eflops)
            yield from (resources, eflops)

        share = GaugeMetricFamily("cir_compute_intelligent_share", "Intelligent compute (FP16) over the compute "
                                  "scale at native precision (0..1; absent while the scale is zero).")
        if data.total.intelligent_share is not None:
            share.add_metric([], data.total.intelligent_share)
        yield share
        yield GaugeMetricFamily("cir_compute_intelligent_centers", "Sites hosting installed intelligent compute.",
                                value=data.intelligent_centers)
        yield GaugeMetricFamily("cir_compute_sites_with_resources", "Sites hosting installed resources.",
                                value=data.sites_with_resources)
        yield from self._sites(data)
        yield from self._prices(data)
        yield from self._live(data)

    @staticmethod
    def _sites(data) -> Iterable[Metric]:
        sites = GaugeMetricFamily("cir_compute_sites_by_hub", "Sites in the catalog by hub.", labels=["hub"])
        pue = GaugeMetricFamily("cir_compute_site_pue_median_by_hub", "Median PUE of the sites of a hub.",
                                labels=["hub"])
        green = GaugeMetricFamily("cir_compute_site_green_ratio_median_by_hub",
                                  "Median green-power share (0..1) of the sites of a hub.", labels=["hub"])
        for code, group in sorted(((_hub(k), v) for k, v in data.sites.by_hub.items()), key=lambda item: item[0]):
            sites.add_metric([code], group.sites)
            if group.median_pue is not None:
                pue.add_metric([code], group.median_pue)
            if group.median_green_ratio is not None:
                green.add_metric([code], group.median_green_ratio)
        yield from (sites, pue, green)
        overall_pue = GaugeMetricFamily("cir_compute_site_pue_median", "Median PUE of all sites.")
        overall_green = GaugeMetricFamily("cir_compute_site_green_ratio_median",
                                          "Median green-power share (0..1) of all sites.")
        if data.sites.all.median_pue is not None:
            overall_pue.add_metric([], data.sites.all.median_pue)
        if data.sites.all.median_green_ratio is not None:
            overall_green.add_metric([], data.sites.all.median_green_ratio)
        yield from (overall_pue, overall_green)

    @staticmethod
    def _prices(data) -> Iterable[Metric]:
        labels = ["model_group", "unit"]
        count = GaugeMetricFamily("cir_compute_price_resources", "Active resources in a price-index group "
                                  "(accelerator model of the reference table, or other) and price unit.", labels=labels)
        hourly = GaugeMetricFamily("cir_compute_price_per_hour_median_yuan",
                                   "Median price per card-, core- or node-hour (the unit label) in yuan.",
                                   labels=labels)
        tokens = GaugeMetricFamily("cir_compute_price_per_million_tokens_median_yuan",
                                   "Median price per million tokens in yuan, over resources publishing one.",
                                   labels=labels)
        for price in sorted(data.price_by_model, key=lambda p: (p.group is None, p.group or "", p.unit)):
            key = [price.group or OTHER_MODELS, price.unit]
            count.add_metric(key, price.resources)
            if price.median_price_per_hour is not None:
                hourly.add_metric(key, float(price.median_price_per_hour))
            if price.median_price_per_million_tokens is not None:
                tokens.add_metric(key, float(price.median_price_per_million_tokens))
        yield from (count, hourly, tokens)

    @staticmethod
    def _live(data) -> Iterable[Metric]:
        labels = ["hub", "unit"]
        active = GaugeMetricFamily("cir_compute_live_resources", "Active resources by hub and price unit.",
                                   labels=labels)
        fresh = GaugeMetricFamily("cir_compute_live_fresh_resources",
                                  "Active resources whose latest availability report has not expired.", labels=labels)
        capacity = GaugeMetricFamily("cir_compute_live_capacity_units", "Static capacity of active resources in "
                                     "their price unit (cards or cores, or nodes).", labels=labels)
        available = GaugeMetricFamily("cir_compute_live_available_units",
                                      "Units available now: the sum of fresh reports' available_units.", labels=labels)
        by_hub: dict[str, list[int]] = {}
        for cell in data.live:
            key = [_hub(cell.hub), cell.unit]
            active.add_metric(key, cell.active_resources)
            fresh.add_metric(key, cell.fresh_resources)
            capacity.add_metric(key, cell.static_units)
            available.add_metric(key, cell.fresh_units)
            counts = by_hub.setdefault(_hub(cell.hub), [0, 0])
            counts[0] += cell.fresh_resources
            counts[1] += cell.active_resources
        yield from (active, fresh, capacity, available)
        share_by_hub = GaugeMetricFamily("cir_compute_fresh_share_by_hub", "Share of a hub's active resources whose "
                                         "availability is fresh (0..1).", labels=["hub"])
        for hub, (fresh_n, active_n) in sorted(by_hub.items()):
            if active_n:
                share_by_hub.add_metric([hub], fresh_n / active_n)
        share = GaugeMetricFamily("cir_compute_fresh_share", "Share of all active resources whose availability is "
                                  "fresh (0..1).")
        if data.fresh_share is not None:
            share.add_metric([], data.fresh_share)
        yield from (share_by_hub, share)


# Readiness -----------------------------------------------------------------------------------------

class ReadinessCollector:
    """The /readyz checks as gauges, for alerting (a scrape runs them; they are cheap and local)."""

    def collect(self) -> Iterator[Metric]:
        from . import health

        report = health.readiness()
        checks = GaugeMetricFamily("cir_readiness_check", "1 when a readiness check passes (or is not configured), "
                                   "0 when it fails or cannot run.", labels=["check"])
        for check in report.checks:
            checks.add_metric([check.name], 1.0 if check.passing else 0.0)
        yield checks
        yield GaugeMetricFamily("cir_ready", "1 when every readiness check passes (GET /readyz answers 200).",
                                value=1.0 if report.ready else 0.0)


# Scrape --------------------------------------------------------------------------------------------

def scrape_registry(*, node: bool = True, compute: bool = True, readiness: bool = True) -> CollectorRegistry:
    """A registry for one scrape: instruments, the node, the compute network, readiness, and (outside
    multiprocess mode, where they would describe one worker only) this process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Instruments())
    if not multiprocess_dir():
        ProcessCollector(registry=registry)
    if readiness:
        registry.register(ReadinessCollector())
    sources = [*([NodeCollector()] if node else []), *([ComputeCollector()] if compute else [])]
    if sources:
        registry.register(_Guard(sources))
    return registry


def render(accept: str = "") -> tuple[bytes, str]:
    """The exposition of one scrape, in the Prometheus text format or OpenMetrics as ``Accept`` asks."""
    started = time.perf_counter()
    encoder, content_type = choose_encoder(accept or "")
    body = encoder(scrape_registry())
    log.debug("metrics scrape in %.3f s", time.perf_counter() - started)
    return body, content_type
