"""The public resolver pages (issue 8): the search box on ``/`` and the record at ``/r/{ucri}``, with
every error case a person can meet, each with its own message, test hook and status code."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from html.parser import HTMLParser

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from stdnum.iso7064 import mod_37_36

from registry import identifiers, mirror, services, suggestions
from registry.identifiers import CROCKFORD, ISO7064_ALPHABET
from registry.models import Resource
from registry.records import timestamp
from tests.support import factories

pytestmark = pytest.mark.django_db

NATIONAL = "http://127.0.0.1:8000"
GUIZHOU = "http://127.0.0.1:8052"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Hooks(HTMLParser):
    """Every element carrying a ``data-testid``: its attributes and its text (nested text included)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: dict[str, list[dict]] = {}
        self._open: list[tuple[str, dict | None]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.handle_data(" ")  # element boundaries separate words, as a browser's layout would
        attrs = dict(attrs)
        element = None
        if "data-testid" in attrs:
            element = {"attrs": attrs, "text": ""}
            self.found.setdefault(attrs["data-testid"], []).append(element)
        if tag not in VOID:
            self._open.append((tag, element))

    def handle_endtag(self, tag):
        self.handle_data(" ")
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, element in self._open:
            if element is not None:
                element["text"] += data

    def one(self, testid: str) -> dict:
        elements = self.found.get(testid, [])
        assert len(elements) == 1, f"{testid}: {len(elements)} elements"
        return elements[0]

    def text(self, testid: str) -> str:
        return " ".join(self.one(testid)["text"].split())

    def all(self, testid: str) -> list[dict]:
        return self.found.get(testid, [])


def get(client, path: str, **extra) -> tuple[int, Hooks, str]:
    response = client.get(path, **extra)
    html = response.content.decode()
    return response.status_code, Hooks(html), html


def error_code(hooks: Hooks) -> str:
    return hooks.one("resolve-error")["attrs"]["data-code"]


def with_ucri(resource: Resource, ucri: str) -> Resource:
    """Give a test resource a chosen UCRI (services always mint a random one)."""
    Resource.objects.filter(pk=resource.pk).update(ucri=ucri)
    resource.refresh_from_db()
    return resource


# The record ---------------------------------------------------------------------------------------

def test_a_local_record_shows_every_part(client, provider):
    beijing = factories.site(provider, name="Yizhuang DC", province="11", pue=1.18, green_ratio=0.45,
                             rack_availability=0.7, wue=1.4, cue=0.3)
    resource = factories.resource(beijing, price_per_million_tokens="0.8")
    start = timezone.now() - dt.timedelta(hours=1)
    services.downtime_create(provider=provider, data={
        "resource": resource.ucri, "start": start, "end": start + dt.timedelta(hours=3),
        "classification": "unscheduled", "reason": "cooling repair"})
    expires = timezone.now() + dt.timedelta(days=30)
    services.provider_record_credential(provider=provider, credential="x.y.z", status="valid", expires_at=expires)

    status, hooks, html = get(client, f"/r/{resource.ucri}")
    assert status == 200
    assert "resolve-error" not in hooks.found
    assert hooks.one("record")["attrs"]["data-ucri"] == resource.ucri
    assert hooks.text("record-status") == "Active"
    facts = hooks.text("record-facts")
    for expected in ("Intelligent computing", "64 × A100 SXM 80GB", "620.8 TFLOPS", "19,968 TFLOPS",
                     "5,120 GB", "200 TB", "Nodes 8"):
        assert expected in facts, expected
    assert hooks.text("record-price") == "¥8.5 yuan per card-hour ¥0.8 per million tokens"
    # Provider and credential status, with the credential's expiry as a machine-readable time.
    assert "Guizhou Cloud Compute Co" in hooks.text("provider-status")
    assert hooks.text("provider-status-value") == "Active"
    assert hooks.one("credential-status")["attrs"]["data-credential-status"] == "valid"
    assert f'<time datetime="{timestamp(expires)}">' in html
    # Site and green metrics by name, as percentages.
    assert hooks.text("site-province") == "Beijing (11)"
    assert hooks.text("site-hub") == "Beijing-Tianjin-Hebei"
    assert hooks.text("site-pue") == "1.18 (hub target ≤ 1.25)"
    assert hooks.text("site-green") == "45%"
    assert hooks.text("site-racks") == "70%"
    assert "1.4 L/kWh" in hooks.text("site-metrics") and "0.3 kgCO₂/kWh" in hooks.text("site-metrics")
    # Endpoints and the ongoing downtime.
    assert "https://slurm.example.cn/slurmrestd" in hooks.text("endpoints")
    [downtime] = hooks.all("downtime-row")
    assert "cooling repair" in downtime["text"] and "ongoing" in downtime["text"]
    assert f'<time datetime="{timestamp(start)}">' in html
    # Where it came from.
    source = hooks.one("record-source")
    assert source["attrs"]["data-source"] == "local"
    assert hooks.text("record-source") == f"Registered on this node ({GUIZHOU})."
    assert hooks.one("record-api-link")["attrs"]["href"] == f"/api/v1/resolve/{resource.ucri}"
    assert hooks.one("ucri-search")["attrs"]["value"] == resource.ucri


def test_a_mirrored_record_names_its_origin_and_sync_time(client):
    factories.node(role="national", code=None, entity_id=NATIONAL)
    prefix, site_id = "86.52.GZ01", str(uuid.uuid4())
    ucri = identifiers.mint(prefix)
    synced = timezone.now()
    changes = [
        ("provider", "upsert", prefix, {"prefix": prefix, "name": "Guizhou Mirror Co", "uscc": factories.valid_uscc(),
                                        "status": "active", "credential": None, "credential_status": None,
                                        "credential_expires_at": None, "version": 1}),
        ("site", "upsert", site_id, {"id": site_id, "version": 1, "name": "Gui'an 2", "province": "52", "hub": "gz",
                                     "pue": 1.15, "wue": None, "cue": None, "green_ratio": 0.6,
                                     "rack_availability": 0.25, "provider": prefix}),
    ]
    for version, state in ((1, "active"), (2, "suspended")):
        record = {"ucri": ucri, "provider": prefix, "status": state, "version": version,
                  "updated_at": timestamp(synced - dt.timedelta(minutes=10 - version)), "retired_at": None,
                  "local_id": "gz-7", "name": "Mirrored pool", "kind": "super", "site_id": site_id,
                  "accelerator": "CPU", "accelerator_model": "Hygon 7285", "accelerator_count": 2048,
                  "node_count": 32, "fp64_tflops": 80.0, "fp32_tflops": None, "fp16_tflops": None,
                  "int8_tops": None, "memory_gb": None, "storage_tb": None, "price_per_hour": 0.05,
                  "price_unit": "core", "price_per_million_tokens": None, "endpoints": []}
        changes.append(("resource", "upsert", ucri, record))
    for kind, op, key, record in changes:
        change = {"type": kind, "op": op, "key": key, "version": record["version"], "authority": GUIZHOU,
                  "record": record}
        assert mirror.apply(change, now=synced) == mirror.APPLIED

    status, hooks, html = get(client, f"/r/{ucri}")
    assert status == 200
    source = hooks.one("record-source")
    assert source["attrs"]["data-source"] == "mirror"
    assert f"Mirrored from {GUIZHOU}." in hooks.text("record-source")
    assert hooks.one("record-synced-at")["attrs"]["datetime"] == timestamp(synced)
    assert hooks.text("record-status") == "Suspended"
    assert hooks.text("site-province") == "Guizhou (52)"
    assert hooks.text("site-green") == "60%" and hooks.text("site-racks") == "25%"
    assert "No credential issued yet" in hooks.text("credential-status")
    # The history comes from the relayed outbox rows: both versions, with the origin's times.
    rows = hooks.all("status-history-row")
    assert [(r["attrs"]["data-version"], r["attrs"]["data-status"]) for r in rows] == [("1", "active"),
                                                                                      ("2", "suspended")]
    assert f'<time datetime="{timestamp(synced - dt.timedelta(minutes=8))}">' in html


def test_status_history_records_an_operator_suspension(client, resource):
    services.resource_update(resource=resource, data={"name": "renamed pool"})  # no status change: no row
    services.operator_suspend_resource(resource=resource, actor="operator", reason="audit")
    resource.refresh_from_db()
    status, hooks, _ = get(client, f"/r/{resource.ucri}")
    assert status == 200
    rows = hooks.all("status-history-row")
    assert [(r["attrs"]["data-version"], r["attrs"]["data-status"]) for r in rows] == [("1", "active"),
                                                                                      ("3", "suspended")]
    assert "Suspended" in rows[1]["text"]
    assert hooks.text("record-status") == "Suspended"
    assert resource.version == 3


# Checksum errors and "did you mean" ---------------------------------------------------------------

def _substitutions(ucri: str) -> set[str]:
    """Independently of registry.suggestions: every single-character substitution in the body or the
    check character that stdnum's MOD 37,36 accepts."""
    prefix, _, rest = ucri.partition("/")
    body, check = rest.split("-")
    found = set()
    for i, char in itertools.product(range(len(body)), CROCKFORD):
        candidate = body[:i] + char + body[i + 1:]
        if candidate != body and mod_37_36.is_valid(prefix.replace(".", "") + candidate + check):
            found.add(f"{prefix}/{candidate}-{check}")
    for char in ISO7064_ALPHABET:
        if char != check and mod_37_36.is_valid(prefix.replace(".", "") + body + char):
            found.add(f"{prefix}/{body}-{char}")
    return found


def _typo(ucri: str, position: int) -> str:
    """``ucri`` with the body character at ``position`` replaced so that the check fails."""
    prefix, _, rest = ucri.partition("/")
    body, check = rest.split("-")
    for char in CROCKFORD:
        typo = f"{prefix}/{body[:position]}{char}{body[position + 1:]}-{check}"
        if char != body[position]:
            return typo
    raise AssertionError


def test_checksum_error_lists_only_existing_ucris_one_typo_away(client, site):
    meant = factories.resource(site, name="the one meant")
    typo = _typo(meant.ucri, 5)
    valid_nearby = _substitutions(typo)
    assert meant.ucri in valid_nearby
    # Another existing resource one substitution away from the same typo, elsewhere in the body.
    other_ucri = sorted(u for u in valid_nearby if u != meant.ucri and u.split("/")[1][5] == typo.split("/")[1][5])[0]
    other = with_ucri(factories.resource(site, name="a neighbour"), other_ucri)
    factories.resource(site, name="unrelated")
    assert len(valid_nearby) > 2  # so non-existing valid candidates were there to be left out
    assert valid_nearby <= suggestions.candidates(typo)

    status, hooks, _ = get(client, f"/r/{typo.lower()}")
    assert status == 400
    assert error_code(hooks) == "ucri_checksum"
    listed = {item["attrs"]["data-ucri"] for item in hooks.all("did-you-mean-item")}
    assert listed == {meant.ucri, other.ucri}
    assert "the one meant" in hooks.text("did-you-mean") and "a neighbour" in hooks.text("did-you-mean")
    assert {a for a in valid_nearby if a not in listed}, "the non-existing candidates are not listed"


def test_the_existence_check_is_one_query(site):
    meant = factories.resource(site)
    typo = _typo(meant.ucri, 0)
    with CaptureQueriesContext(connection) as queries:
        found = suggestions.did_you_mean(typo)
    assert [s.ucri for s in found] == [meant.ucri]
    assert len(queries.captured_queries) == 1
    assert "IN" in queries.captured_queries[0]["sql"]


def test_an_adjacent_transposition_is_suggested(client, site):
    meant = factories.resource(site)
    prefix, _, rest = meant.ucri.partition("/")
    body, check = rest.split("-")
    swaps = [f"{prefix}/{body[:i]}{body[i + 1]}{body[i]}{body[i + 2:]}-{check}" for i in range(len(body) - 1)
             if body[i] != body[i + 1]]
    typo = next(s for s in swaps if not identifiers.is_valid(s))
    status, hooks, _ = get(client, f"/r/{typo}")
    assert (status, error_code(hooks)) == (400, "ucri_checksum")
    assert meant.ucri in {item["attrs"]["data-ucri"] for item in hooks.all("did-you-mean-item")}


def test_a_swap_of_the_last_body_character_and_the_check_is_suggested(site):
    for _ in range(200):
        meant = factories.resource(site)
        prefix, _, rest = meant.ucri.partition("/")
        body, check = rest.split("-")
        if check in CROCKFORD and check != body[-1]:
            typo = f"{prefix}/{body[:-1]}{check}{body[-1]}"  # no hyphen: the person typed it in one run
            if not identifiers.is_valid(typo):
                break
    else:
        pytest.skip("no suitable UCRI minted")
    assert meant.ucri in {s.ucri for s in suggestions.did_you_mean(typo)}


def test_a_typo_in_the_prefix_is_suggested(site):
    meant = factories.resource(site)
    typo = meant.ucri.replace("86.52.GZ01/", "86.52.GZ07/")
    assert not identifiers.is_valid(typo)
    assert [s.ucri for s in suggestions.did_you_mean(typo)] == [meant.ucri]


def test_a_checksum_error_with_nothing_nearby_says_so(client, node):
    typo = _typo("86.52.GZ01/000000000001-N", 3)
    status, hooks, _ = get(client, f"/r/{typo}")
    assert (status, error_code(hooks)) == (400, "ucri_checksum")
    assert hooks.all("did-you-mean-item") == []
    assert "No registered resource is one typo away" in hooks.text("did-you-mean-none")


# Malformed, unknown, retired, referral ------------------------------------------------------------

@pytest.mark.parametrize("garbage", ["hello", "86.52.GZ01", "86.52.GZ01/7ZK3M9Q2AB4C-L/", "86.52.GZ01/<script>-L"])
def test_a_malformed_identifier_is_explained(client, node, garbage):
    status, hooks, html = get(client, f"/r/{garbage}")
    assert (status, error_code(hooks)) == (400, "ucri_malformed")
    assert "cannot be read as a UCRI" in hooks.text("resolve-error")
    assert "<script>" not in html


def test_an_unknown_identifier_links_back_to_search_and_not_in_a_circle(client, provider):
    ucri = identifiers.compose(provider.prefix, "000000000001")
    status, hooks, _ = get(client, f"/r/{ucri}")
    assert (status, error_code(hooks)) == (404, "ucri_unknown")
    assert "no resource is registered under it here" in hooks.text("resolve-error")
    assert hooks.one("back-to-search")["attrs"]["href"] == "/"
    assert "superior-link" not in hooks.found

    # Inside this node's subtree the superior would refer the reader straight back here: no link up.
    services.platform_set_superior(entity_id=NATIONAL, prefix="86")
    status, hooks, _ = get(client, f"/r/{ucri}")
    assert (status, error_code(hooks)) == (404, "ucri_unknown")
    assert "superior-link" not in hooks.found


def test_a_retired_resource_shows_its_tombstone(client, resource):
    retired = services.resource_retire(resource=resource)
    status, hooks, _ = get(client, f"/r/{resource.ucri}")
    assert (status, error_code(hooks)) == (410, "ucri_retired")
    assert "Retirement is final" in hooks.text("resolve-error")
    assert hooks.one("retired-at")["attrs"]["datetime"] == timestamp(retired.retired_at)
    assert hooks.one("provider-link")["attrs"]["href"] == "/api/v1/providers/86.52.GZ01"
    record = hooks.one("record")
    assert (record["attrs"]["data-ucri"], record["attrs"]["data-status"]) == (resource.ucri, "retired")
    assert hooks.text("record-status") == "Retired"
    rows = hooks.all("status-history-row")
    assert [r["attrs"]["data-status"] for r in rows] == ["active", "retired"]


def test_a_referral_links_onward(client, node):
    services.platform_set_superior(entity_id=NATIONAL, prefix="86")
    ucri = identifiers.compose("86.11.X1", "000000000001")
    status, hooks, _ = get(client, f"/r/{ucri}")
    assert (status, error_code(hooks)) == (404, "ucri_referral")
    assert f"The node to ask next is {NATIONAL}." in hooks.text("resolve-error")
    assert hooks.one("referral-link")["attrs"]["href"] == f"{NATIONAL}/r/{ucri}"
    assert hooks.one("referral-api-link")["attrs"]["href"] == f"{NATIONAL}/api/v1/resolve/{ucri}"


def test_a_referral_to_a_subordinate(client, node):
    services.platform_delegate(entity_id="http://127.0.0.1:8100", prefix="86.52.IND1")
    ucri = identifiers.compose("86.52.IND1.P01", "000000000001")
    status, hooks, _ = get(client, f"/r/{ucri}")
    assert (status, error_code(hooks)) == (404, "ucri_referral")
    assert hooks.one("referral-link")["attrs"]["href"] == f"http://127.0.0.1:8100/r/{ucri}"


def test_page_status_codes_match_the_api(client, api, resource):
    services.platform_set_superior(entity_id=NATIONAL, prefix="86")
    retired = factories.resource(resource.site)
    services.resource_retire(resource=retired)
    for text in (resource.ucri, retired.ucri, _typo(resource.ucri, 2), "junk",
                 identifiers.compose("86.11.X1", "000000000001"), identifiers.compose("86.52.GZ01", "000000000001")):
        expected = api.get(f"/api/v1/resolve/{text}")
        status, hooks, _ = get(client, f"/r/{text}")
        assert status == expected.status_code, text
        if status != 200:
            assert error_code(hooks) == expected.json()["code"], text


# The search box -----------------------------------------------------------------------------------

def test_home_has_the_search_box_and_samples(client, resource):
    status, hooks, _ = get(client, "/")
    assert status == 200
    search = hooks.one("ucri-search")
    assert search["attrs"]["name"] == "q"
    assert hooks.one("ucri-search-submit")["attrs"]["type"] == "submit"
    assert "provincial node for the prefix 86.52" in hooks.text("node-description")
    assert resource.ucri in hooks.text("sample-ucris")
    assert "resolve-error" not in hooks.found


@pytest.mark.parametrize("spell", [
    lambda u: u.lower(),
    lambda u: f"  {u}  ",
    lambda u: u.replace("-", ""),
    lambda u: u.replace("/", "/-", 1).lower(),
])
def test_home_redirects_forgiving_forms_to_the_canonical_page(client, resource, spell):
    response = client.get("/", {"q": spell(resource.ucri)})
    assert response.status_code == 302
    assert response["Location"] == f"/r/{resource.ucri}"
    assert client.get(response["Location"]).status_code == 200


def test_home_with_crockford_aliases_redirects(client, site):
    resource = with_ucri(factories.resource(site), identifiers.compose("86.52.GZ01", "0110ABCD0001"))
    response = client.get("/", {"q": resource.ucri.replace("/0110", "/oIl0")})
    assert (response.status_code, response["Location"]) == (302, f"/r/{resource.ucri}")


def test_home_explains_what_does_not_parse(client, resource):
    status, hooks, _ = get(client, "/?q=not+a+ucri")
    assert (status, error_code(hooks)) == (400, "ucri_malformed")
    status, hooks, _ = get(client, "/", data={"q": _typo(resource.ucri, 7)})
    assert (status, error_code(hooks)) == (400, "ucri_checksum")
    assert [i["attrs"]["data-ucri"] for i in hooks.all("did-you-mean-item")] == [resource.ucri]
    status, hooks, _ = get(client, "/?q=%20%20")
    assert status == 200 and "resolve-error" not in hooks.found


@override_settings(CIR_RESOLVE_RATE="1/min")
def test_rate_limit_gives_the_429_page(client, resource):
    assert client.get(f"/r/{resource.ucri}").status_code == 200
    response = client.get("/", {"q": "garbage"})
    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert error_code(Hooks(response.content.decode())) == "rate_limited"
    assert client.get("/", {"q": resource.ucri}).status_code == 302  # redirecting costs nothing


# Languages ----------------------------------------------------------------------------------------

def test_the_record_renders_in_chinese(client, provider):
    site = factories.site(provider, province="11")
    resource = factories.resource(site)
    client.cookies["django_language"] = "zh-hans"
    status, hooks, html = get(client, f"/r/{resource.ucri}")
    assert status == 200
    assert '<html lang="zh-hans">' in html
    assert hooks.text("site-province") == "北京 (11)"
    assert hooks.text("site-hub") == "京津冀"
    status, hooks, html = get(client, "/r/nonsense")
    assert (status, error_code(hooks)) == (400, "ucri_malformed")
    assert get(client, "/")[0] == 200
