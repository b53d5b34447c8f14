"""/metrics (CONTRACT §11, §12): who may read it, that prometheus-client's own parser reads it, that the
compute network's figures equal sums computed here from the catalog records, that per-peer sync figures
are the peers' rows, that labels stay bounded (no UCRI, no raw path), and that outcomes are counted."""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections import defaultdict
from urllib.parse import urlencode

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from federation.models import Peer
from identity import oauth
from registry import services
from registry.models import Availability, Provider, Resource, Site, Source
from tests.monitoring.scraping import Scrape, scrape
from tests.support import auth, factories

pytestmark = pytest.mark.django_db
OUTSIDE = "203.0.113.7"  # TEST-NET-3: never loopback, never in a default allow-list


# Who may read it ------------------------------------------------------------------------------------

def test_loopback_reads_it_by_default(ready_node):
    api = APIClient()
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert api.get("/metrics", REMOTE_ADDR=address).status_code == 200, address


def test_other_addresses_need_a_token_with_metrics_read(ready_node):
    api = APIClient()
    refused = api.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert refused.status_code == 401
    assert refused["Content-Type"] == "application/problem+json" and refused["WWW-Authenticate"].startswith("Bearer")
    assert refused.json()["code"] == "invalid_token" and refused.json()["status"] == 401

    reader = auth.bearer_client(auth.register("dashboard-reader", "resources:read"))
    wrong = reader.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert wrong.status_code == 403 and wrong.json()["code"] == "insufficient_scope"
    assert "metrics:read" in wrong.json()["detail"]

    scraper = auth.bearer_client(auth.register("prometheus", "metrics:read"))
    allowed = scraper.get("/metrics", REMOTE_ADDR=OUTSIDE)
    assert allowed.status_code == 200 and b"cir_ready " in allowed.content

    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert forged.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 401


def test_the_allow_list_setting(ready_node):
    api = APIClient()
    with override_settings(CIR_METRICS_ALLOW=["10.0.0.0/8", "2001:db8::/32"]):
        assert api.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
        assert api.get("/metrics", REMOTE_ADDR="2001:db8::5").status_code == 200
        assert api.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401  # loopback no longer listed
    with override_settings(CIR_METRICS_ALLOW=[]):
        assert api.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401


def test_a_malformed_allow_list_stops_the_process():
    from django.core.exceptions import ImproperlyConfigured

    from monitoring import access

    with override_settings(CIR_METRICS_ALLOW=["10.0.0.0/8", "intranet"]), \
            pytest.raises(ImproperlyConfigured, match="intranet"):
        access.allowed_networks()  # called by the app's ready(), so at start-up


def test_behind_a_trusted_proxy_the_forwarded_address_counts(ready_node):
    api = APIClient()
    rest = {"NUM_PROXIES": 1}
    from django.conf import settings

    with override_settings(REST_FRAMEWORK={**settings.REST_FRAMEWORK, **rest}, CIR_METRICS_ALLOW=["10.0.0.0/8"]):
        # The proxy (127.0.0.1) appended the client it saw; what the client wrote before it is ignored.
        assert api.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.1.1.1").status_code == 200
        assert api.get("/metrics", REMOTE_ADDR="127.0.0.1",
                       HTTP_X_FORWARDED_FOR="10.1.1.1, 198.51.100.4").status_code == 401


def test_scrapers_that_ask_for_text_or_openmetrics(ready_node):
    api = APIClient()
    text = api.get("/metrics", HTTP_ACCEPT="text/plain")
    assert text.status_code == 200 and text["Content-Type"].startswith("text/plain; version=0.0.4")
    openmetrics = api.get("/metrics", HTTP_ACCEPT="application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert openmetrics.status_code == 200 and openmetrics["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics.content.rstrip().endswith(b"# EOF")


# The compute network: equal to sums over the catalog records ----------------------------------------

def _card(**overrides):
    data = {"kind": "intelligent", "accelerator": "GPU", "accelerator_model": "A100 SXM 80GB", "accelerator_count": 8,
            "node_count": 1, "fp64_tflops": None, "fp32_tflops": None, "fp16_tflops": None, "int8_tops": None,
            "price_per_hour": "8.5", "price_unit": "card"}
    data.update(overrides)
    return data


def _availability(resource: Resource, units: int, *, expires_in: int) -> None:
    now = timezone.now()
    Availability.objects.create(resource=resource, available_units=units, observed_at=now - dt.timedelta(seconds=5),
                                valid_for=max(1, expires_in + 5), expires_at=now + dt.timedelta(seconds=expires_in),
                                authority="http://127.0.0.1:8052")


@pytest.fixture
def catalog(ready_node):
    """Every kind; hubs west, east and none; several provinces; a site without resources; a retired and
    suspended resources; a mirrored provider; fresh and stale availability; card, core and node prices;
    a model outside the reference table."""
    own = factories.provider(code="GZ01")
    gz = factories.site(own, province="52", pue=1.15, green_ratio=0.62)
    gz2 = factories.site(own, province="52", pue=1.21, green_ratio=0.8)
    bj = factories.site(own, province="11", pue=1.24, green_ratio=0.3)
    sh = factories.site(own, province="31", pue=1.31, green_ratio=0.2)
    sd = factories.site(own, province="37", pue=1.45, green_ratio=0.1)  # Shandong: outside the hubs
    factories.site(own, province="64", pue=1.1, green_ratio=0.95)  # Ningxia, empty
    made = {
        "a100": factories.resource(gz, **_card(accelerator_count=64, fp64_tflops=620.8, fp32_tflops=1248.0,
                                               fp16_tflops=19968.0)),
        "a100_bj": factories.resource(bj, **_card(accelerator_count=16, fp64_tflops=155.2, fp16_tflops=4992.0,
                                                  price_per_hour="7.0")),
        "ascend": factories.resource(gz2, **_card(accelerator="NPU", accelerator_model="Ascend 910B",
                                                  accelerator_count=128, fp16_tflops=40064.0, price_per_hour="6",
                                                  price_per_million_tokens="2.0")),
        "kunlun": factories.resource(sh, **_card(accelerator="ASIC", accelerator_model="Kunlun R200",
                                                 accelerator_count=32, fp16_tflops=4096.0, price_per_hour="3.0")),
        "kunpeng": factories.resource(sd, kind="general", accelerator="CPU", accelerator_model="Kunpeng 920 (64 cores)",
                                      accelerator_count=4096, node_count=32, fp64_tflops=83.2, fp32_tflops=172.8,
                                      fp16_tflops=None, int8_tops=None, price_per_hour="0.15", price_unit="core"),
        "xeon": factories.resource(gz, kind="general", accelerator="CPU",
                                   accelerator_model="Xeon Platinum 8480+ (56 cores)", accelerator_count=1792,
                                   node_count=16, fp64_tflops=115.2, fp32_tflops=230.4, fp16_tflops=None,
                                   int8_tops=None, price_per_hour="0.2", price_unit="core", status="suspended"),
        "sunway": factories.resource(gz2, kind="super", accelerator="CPU", accelerator_model="SW26010-Pro (node)",
                                     accelerator_count=199680, node_count=512, fp64_tflops=7168.0, fp32_tflops=7168.0,
                                     fp16_tflops=None, int8_tops=None, price_per_hour="12", price_unit="node"),
        "gpu_super": factories.resource(bj, **_card(kind="super", accelerator_count=32, fp64_tflops=310.4,
                                                    fp16_tflops=9984.0, price_per_hour="10.0")),
        "retired": factories.resource(gz, **_card(accelerator_model="H100 SXM 80GB", accelerator_count=256,
                                                  fp64_tflops=8704.0, fp16_tflops=253184.0, price_per_hour="20")),
    }
    services.resource_retire(resource=made["retired"])
    peer = factories.provider(code="GD01")
    gd = factories.site(peer, province="44", pue=1.19, green_ratio=0.35)
    made["mirrored"] = factories.resource(gd, **_card(accelerator_model="H100 SXM 80GB", accelerator_count=64,
                                                      fp64_tflops=2176.0, fp16_tflops=63296.0, price_per_hour="18.0"))
    Provider.objects.filter(pk=peer.pk).update(source=Source.MIRROR)
    Site.objects.filter(pk=gd.pk).update(source=Source.MIRROR)
    Resource.objects.filter(pk=made["mirrored"].pk).update(source=Source.MIRROR)

    _availability(made["a100"], 10, expires_in=120)
    _availability(made["a100_bj"], 5, expires_in=-60)  # stale
    _availability(made["kunpeng"], 1000, expires_in=300)
    _availability(made["sunway"], 100, expires_in=300)
    _availability(made["xeon"], 50, expires_in=300)  # fresh but suspended: not live
    _availability(made["mirrored"], 20, expires_in=60)
    return made


def _counted() -> list[Resource]:
    return [r for r in Resource.objects.all() if r.status != "retired"]


NATIVE = {"general": "fp32_tflops", "intelligent": "fp16_tflops", "super": "fp64_tflops"}


def _expected(key) -> dict[tuple, dict[str, float]]:
    groups: dict[tuple, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in _counted():
        group = groups[(key(r),)]
        group[r.status] += 1
        for precision in ("fp64", "fp32", "fp16"):
            group[precision] += (getattr(r, f"{precision}_tflops") or 0) / 1e6
        group["native"] += (getattr(r, NATIVE[r.kind]) or 0) / 1e6
    return groups


def test_the_output_parses_and_compute_figures_equal_sums_over_the_records(catalog):
    data = scrape(APIClient())
    for suffix, key in (("kind", lambda r: r.kind), ("hub", lambda r: r.hub or "none"),
                        ("province", lambda r: r.province)):
        expected = _expected(key)
        for status in ("active", "suspended"):
            got = data.values(f"cir_compute_resources_by_{suffix}", status=status)
            want = {k: v.get(status, 0.0) for k, v in expected.items()}
            if suffix != "kind":
                assert got == want, (suffix, status)
            else:  # every kind is listed, with zeros
                assert got == {**{(k,): 0.0 for k in NATIVE}, **want}
        for precision in ("fp64", "fp16", "native"):
            got = data.values(f"cir_compute_eflops_by_{suffix}", precision=precision)
            assert set(got) >= set(expected), (suffix, precision)
            for group, value in got.items():
                assert value == pytest.approx(expected.get(group, {}).get(precision, 0.0), abs=1e-12), (suffix, group)

    # By hand, as a check on the check: Guizhou holds the A100 pool, Ascend and Sunway (and the suspended
    # Xeon), not the retired H100; the mirrored H100 counts in the Greater Bay Area.
    assert data.value("cir_compute_resources_by_hub", hub="gz", status="active") == 3
    assert data.value("cir_compute_eflops_by_hub", hub="gz", precision="fp16") == pytest.approx(
        (19968.0 + 40064.0) / 1e6)
    assert data.value("cir_compute_resources_by_hub", hub="gba", status="active") == 1
    assert data.value("cir_compute_resources_by_province", province="37", status="active") == 1
    assert data.values("cir_compute_resources_by_hub", hub="none") == {("active",): 1.0, ("suspended",): 0.0}

    counted = _counted()
    native = sum(getattr(r, NATIVE[r.kind]) or 0 for r in counted)
    intelligent = sum(r.fp16_tflops or 0 for r in counted if r.kind == "intelligent")
    assert data.value("cir_compute_intelligent_share") == pytest.approx(intelligent / native)
    assert data.value("cir_compute_intelligent_centers") == len({r.site_id for r in counted if r.kind == "intelligent"})

    now = timezone.now()
    fresh = {a.resource_id for a in Availability.objects.filter(expires_at__gt=now)}
    live = [r for r in counted if r.status == "active"]
    by_hub = defaultdict(lambda: [0, 0])
    for r in live:
        by_hub[r.hub or "none"][0] += r.pk in fresh
        by_hub[r.hub or "none"][1] += 1
    assert data.values("cir_compute_fresh_share_by_hub") == {
        (hub,): pytest.approx(f / n) for hub, (f, n) in by_hub.items()}
    assert data.value("cir_compute_fresh_share") == pytest.approx(sum(r.pk in fresh for r in live) / len(live))
    units = defaultdict(int)
    for r in live:
        if r.pk in fresh:
            units[(r.hub or "none", r.price_unit)] += r.availability.available_units
    assert {k: v for k, v in data.values("cir_compute_live_available_units").items() if v} == {
        k: float(v) for k, v in units.items()}

    # Price index by model group: the reference models by name, every other model as "other".
    assert data.value("cir_compute_price_per_hour_median_yuan", model_group="other", unit="card") == 3.0
    assert data.value("cir_compute_price_per_hour_median_yuan", model_group="A100 SXM 80GB", unit="card") == \
        pytest.approx(8.5)  # A100 at 8.5 and 7.0 and the GPU partition at 10.0: the median
    for hub in ("gz", "yrd"):
        sites = Site.objects.filter(hub=hub)
        assert data.value("cir_compute_site_pue_median_by_hub", hub=hub) == pytest.approx(
            statistics.median(s.pue for s in sites))
        assert data.value("cir_compute_site_green_ratio_median_by_hub", hub=hub) == pytest.approx(
            statistics.median(s.green_ratio for s in sites))


def test_no_ucri_or_raw_path_in_any_label(catalog, ready_node):
    api = APIClient()
    reader = auth.bearer_client(auth.register("scheduler", "resources:read"))
    ucri = catalog["a100"].ucri
    assert reader.get(f"/api/v1/resolve/{ucri}").status_code == 200
    api.get(f"/r/{ucri}")
    text = scrape(api).text
    ucris = set(Resource.objects.values_list("ucri", flat=True))
    prefixes = set(Provider.objects.values_list("prefix", flat=True))
    data = Scrape(text)
    for family in data.families.values():
        for sample in family.samples:
            for name, value in sample.labels.items():
                assert value not in ucris and value not in prefixes, (sample.name, name, value)
                assert not re.search(r"86\.\d+\.[A-Z0-9]+/", value), (sample.name, name, value)
    routes = {sample.labels["route"] for sample in data.families["cir_http_requests"].samples}
    assert any("<" in route and route.startswith("api/v1/") for route in routes), routes  # patterns, not paths


# Per-peer sync figures --------------------------------------------------------------------------------

def test_per_peer_lag_last_success_and_violations(ready_node):
    now = timezone.now()
    behind = Peer.objects.create(entity_id="http://127.0.0.1:8011", relation="subordinate", prefixes=["86.52.11"],
                                 cursor=120, origin_head=150, applied=118, violations=7,
                                 last_success_at=now - dt.timedelta(seconds=90))
    notified = Peer.objects.create(entity_id="http://127.0.0.1:8012", relation="subordinate", prefixes=["86.52.12"],
                                   cursor=40, origin_head=40, last_success_at=now - dt.timedelta(seconds=600),
                                   pull_requested_at=now - dt.timedelta(seconds=45))
    caught_up = Peer.objects.create(entity_id="http://127.0.0.1:8013", relation="subordinate", prefixes=["86.52.13"],
                                    cursor=9, origin_head=9, last_success_at=now - dt.timedelta(seconds=5))
    never = Peer.objects.create(entity_id="http://127.0.0.1:8014", relation="subordinate", prefixes=["86.52.14"])
    Peer.objects.create(entity_id="http://127.0.0.1:8000", relation="superior", violations=2, notified_seq=0)

    data = scrape(APIClient())
    subordinates = [behind, notified, caught_up, never]
    assert data.values("cir_peer_lag_seq", relation="subordinate") == {
        (p.entity_id,): float(p.origin_head - p.cursor) for p in subordinates}
    assert data.values("cir_peer_cursor_seq", relation="subordinate") == {
        (p.entity_id,): float(p.cursor) for p in subordinates}
    assert data.values("cir_peer_violations_total") == {
        (behind.entity_id, "subordinate"): 7.0, (notified.entity_id, "subordinate"): 0.0,
        (caught_up.entity_id, "subordinate"): 0.0, (never.entity_id, "subordinate"): 0.0,
        ("http://127.0.0.1:8000", "superior"): 2.0}
    assert data.values("cir_peer_last_success_timestamp_seconds", relation="subordinate") == {
        (p.entity_id,): pytest.approx(p.last_success_at.timestamp() if p.last_success_at else 0.0)
        for p in subordinates}
    lag = data.values("cir_peer_lag_seconds", relation="subordinate")
    assert 90 <= lag[(behind.entity_id,)] < 120  # behind in seq since the last success
    assert 45 <= lag[(notified.entity_id,)] < 75  # notified 45 s ago, not pulled since
    assert lag[(caught_up.entity_id,)] == 0.0 and lag[(never.entity_id,)] == 0.0
    assert ("http://127.0.0.1:8000",) not in data.values("cir_peer_lag_seq", relation="superior")
    assert data.value("cir_peer_trust_chain_state", peer=never.entity_id, state="unknown") == 1.0
    assert data.value("cir_outbox_unannounced_seq") == data.value("cir_outbox_head_seq")


# Node figures: keys, credentials, outbox ----------------------------------------------------------------

def test_keys_credentials_and_outbox(ready_node):
    from core.models import OutboxEntry
    from identity import credentials, keys

    onboarded = credentials.onboard(name="Guizhou Cloud", uscc=factories.valid_uscc(), code="GZ02", actor="test")
    soon = timezone.now() + dt.timedelta(days=3)
    other = credentials.onboard(name="Beijing Compute", uscc=factories.valid_uscc(), code="BJ01", actor="test")
    Provider.objects.filter(pk=other.provider.pk).update(credential_expires_at=soon)
    data = scrape(APIClient())

    assert data.value("cir_provider_credentials", source="local", status="valid") == 2
    assert data.value("cir_provider_credentials_expiring_7d", source="local") == 1
    horizon = data.value("cir_provider_credential_expiry_seconds", source="local")
    assert 3 * 86400 - 60 < horizon <= 3 * 86400
    assert data.value("cir_provider_credentials_issued_total") == 2
    assert onboarded.provider.credential_status == "valid"

    due = data.values("cir_node_key_rotation_due_seconds")
    assert set(due) == {("access_token", "automatic"), ("credential", "automatic"), ("handoff", "automatic"),
                        ("federation", "ceremony")}
    period = keys.ROTATION_PERIOD["federation"].total_seconds()
    assert due[("federation", "ceremony")] == pytest.approx(period, rel=1e-3)
    keys.rotate("access_token", force=True)
    data = scrape(APIClient())
    assert data.value("cir_node_key_successor_pending", purpose="access_token") == 1
    assert data.value("cir_node_key_rotation_due_seconds", purpose="access_token") > \
        keys.ROTATION_PERIOD["access_token"].total_seconds()  # the successor's period counts

    assert data.value("cir_outbox_entries") == OutboxEntry.objects.count() > 0
    assert data.value("cir_outbox_head_seq") == max(OutboxEntry.objects.values_list("seq", flat=True))
    assert data.value("cir_ready") == 1 and data.value("cir_readiness_check", check="keys") == 1


# Requests and outcomes --------------------------------------------------------------------------------

def test_requests_are_counted_by_route_pattern_and_outcomes_by_code(catalog):
    api = APIClient()
    before = scrape(api)
    machine = auth.register("scheduler-7", "resources:read handoff:request")
    reader = auth.bearer_client(machine)  # one token issued
    bad = {"grant_type": "client_credentials", "client_assertion_type": auth.ASSERTION_TYPE,
           "client_assertion": auth.register("stranger", "resources:read").assertion("http://elsewhere.example")}
    api.generic("POST", "/oauth/token", urlencode(bad), content_type="application/x-www-form-urlencoded")
    ucri = catalog["a100"].ucri
    for _ in range(3):
        assert reader.get("/api/v1/resources", {"hub": "gz"}).status_code == 200
    assert reader.get(f"/api/v1/resolve/{ucri}").status_code == 200  # public: the token is not looked at
    assert reader.post("/api/v1/handoffs", {"ucri": ucri, "job": {}}, format="json").status_code == 400  # no DPoP
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert forged.get("/api/v1/resources").status_code == 401
    after = scrape(api)

    def delta(name: str, **labels: str) -> float:
        return after.values(name, **labels).get((), 0.0) - before.values(name, **labels).get((), 0.0)

    route = "api/v1/resources"
    assert after.values("cir_http_requests_total", route=route), sorted(after.values("cir_http_requests_total"))
    assert delta("cir_http_requests_total", route=route, method="GET", status="2xx") == 3
    assert delta("cir_http_request_duration_seconds_count", route=route, method="GET") == 4  # and the 401
    assert delta("cir_oauth_tokens_total", outcome="issued") == 1
    assert delta("cir_oauth_tokens_total", outcome="invalid_client") == 1
    assert delta("cir_handoff_requests_total", outcome="dpop_required") == 1
    assert delta("cir_access_tokens_total", outcome="accepted") == 4  # 3 lists and the handoff request
    assert delta("cir_access_tokens_total", outcome="rejected") == 1
    assert delta("cir_http_requests_total", route="api/v1/resolve/<path:ucri>", method="GET", status="2xx") == 1
    assert "metrics:read" in oauth.SCOPES  # the scope /metrics needs is one the token endpoint grants
