"""Every page in headless Chromium against live nodes holding demo catalogs (see conftest.py)."""

from __future__ import annotations

import csv
import io
import math

import pytest

from registry import identifiers

from .conftest import node_rows, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.federation]


def _first_ucri(node, *, status: str = "active", source: str = "local") -> str:
    return node_rows(node, "SELECT ucri FROM registry_resource WHERE status = %s AND source = %s ORDER BY ucri "
                           "LIMIT 1", (status, source))[0][0]


def _with_bad_check(ucri: str) -> str:
    """The same UCRI with a wrong check character (one substitution)."""
    wrong = next(c for c in "0123456789ABCDEFGHJKMNPQRSTVWXYZ" if c != ucri[-1])
    return ucri[:-1] + wrong


def _value(tab, testid: str) -> float:
    return float(tab.page.get_attribute(f"[data-testid={testid}]", "data-value"))


def test_a_ucri_typed_in_a_forgiving_form_resolves_from_the_search_box(federation, visit):
    ucri = _first_ucri(federation.provincial)  # mirrored at the national node
    tab = visit()
    tab.goto(federation.national.url + "/")
    tab.screenshot("home")
    # Lower case, surrounding spaces and no hyphen before the check character: the contract's forgiving forms.
    tab.page.fill("[data-testid=ucri-search]", "  " + ucri.replace("-", "").lower() + " ")
    tab.page.click("[data-testid=ucri-search-submit]")
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_attribute("[data-testid=record]", "data-ucri") == ucri
    assert tab.page.get_attribute("[data-testid=record-source]", "data-source") == "mirror"
    assert tab.page.locator("[data-testid=status-history-row]").count() >= 1
    tab.screenshot("resolver-record")


def test_each_resolver_error_case_explains_itself(federation, visit):
    national, provincial = federation.national, federation.provincial
    ucri = _first_ucri(national)
    tab = visit()

    tab.allowed_statuses = {400, 404, 410}
    tab.goto(f"{national.url}/r/{_with_bad_check(ucri)}", status=400)
    assert tab.page.get_attribute("[data-testid=resolve-error]", "data-code") == "ucri_checksum"
    suggested = tab.page.locator("[data-testid=did-you-mean-item]").evaluate_all(
        "items => items.map(i => i.dataset.ucri)")
    assert ucri in suggested
    existing = {row[0] for row in node_rows(national, "SELECT ucri FROM registry_resource WHERE ucri = ANY(%s)",
                                            (suggested,))}
    assert existing == set(suggested), "only existing UCRIs are suggested"
    tab.screenshot("resolver-checksum")

    tab.goto(f"{national.url}/r/86.11.AB/not-a-ucri", status=400)
    assert tab.page.get_attribute("[data-testid=resolve-error]", "data-code") == "ucri_malformed"
    assert "cannot be read as a UCRI" in tab.page.inner_text("[data-testid=resolve-error]")
    tab.screenshot("resolver-malformed")

    unknown = identifiers.mint("86.44.ZZ9")  # a well-formed UCRI under a prefix nobody holds
    tab.goto(f"{national.url}/r/{unknown}", status=404)
    assert tab.page.get_attribute("[data-testid=resolve-error]", "data-code") == "ucri_unknown"
    assert "no resource is registered under it here" in tab.page.inner_text("[data-testid=resolve-error]")
    assert tab.page.locator("[data-testid=back-to-search]").count() == 1
    tab.screenshot("resolver-unknown")

    # Asked at the provincial node, a national UCRI is referred upward with a link onward.
    tab.goto(f"{provincial.url}/r/{ucri}", status=404)
    assert tab.page.get_attribute("[data-testid=resolve-error]", "data-code") == "ucri_referral"
    onward = tab.page.get_attribute("[data-testid=referral-link]", "href")
    assert onward == f"{national.url}/r/{ucri}"
    tab.screenshot("resolver-referral")
    tab.page.click("[data-testid=referral-link]")
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_attribute("[data-testid=record]", "data-ucri") == ucri

    retired = _first_ucri(national, status="retired")
    tab.goto(f"{national.url}/r/{retired}", status=410)
    assert tab.page.get_attribute("[data-testid=resolve-error]", "data-code") == "ucri_retired"
    assert tab.page.locator("[data-testid=retired-at]").count() == 1
    tab.screenshot("resolver-retired")


def test_dashboard_totals_equal_sums_of_the_records(federation, visit):
    national = federation.national
    (fp64, fp16, general32, intelligent16, super64, counted), = node_rows(national, """
        SELECT coalesce(sum(fp64_tflops), 0), coalesce(sum(fp16_tflops), 0),
               coalesce(sum(fp32_tflops) FILTER (WHERE kind = 'general'), 0),
               coalesce(sum(fp16_tflops) FILTER (WHERE kind = 'intelligent'), 0),
               coalesce(sum(fp64_tflops) FILTER (WHERE kind = 'super'), 0), count(*)
        FROM registry_resource WHERE status IN ('active', 'suspended')""")
    mirrored = node_rows(national, "SELECT count(*) FROM registry_resource WHERE source = 'mirror'")[0][0]
    assert mirrored > 0, "the national catalog holds the provincial node's records"
    tab = visit()
    tab.goto(national.url + "/dashboard")
    assert math.isclose(_value(tab, "total-eflops-fp64"), fp64 / 1e6, rel_tol=1e-9)
    assert math.isclose(_value(tab, "total-eflops-fp16"), fp16 / 1e6, rel_tol=1e-9)
    native = general32 + intelligent16 + super64
    assert math.isclose(_value(tab, "total-eflops-native"), native / 1e6, rel_tol=1e-9)
    assert math.isclose(_value(tab, "intelligent-share"), intelligent16 / native, rel_tol=1e-9)
    assert _value(tab, "resource-count") == counted
    hubs = dict(node_rows(national, "SELECT coalesce(hub, ''), count(*) FROM registry_resource "
                                    "WHERE status IN ('active', 'suspended') GROUP BY 1"))
    shown = tab.page.locator("[data-testid=hub-row]").evaluate_all(
        "rows => rows.map(r => [r.dataset.hub || '', Number(r.dataset.resources)])")
    assert {hub: n for hub, n in shown if n} == {hub: n for hub, n in hubs.items() if n}
    tab.screenshot("dashboard")


def test_explorer_filters_paginate_and_export_what_discovery_shows(federation, visit):
    national = federation.national
    tab = visit()
    sign_in(tab, national.url, "operator", "/explorer")
    assert tab.page.url.endswith("/explorer")
    tab.page.select_option("[data-testid=filter-kind]", "intelligent")
    tab.page.select_option("[data-testid=filter-limit]", "25")
    tab.page.click("[data-testid=explorer-apply]")
    tab.page.wait_for_load_state("networkidle")
    first_page = tab.page.locator("[data-testid=explorer-row]").evaluate_all("rows => rows.map(r => r.dataset.ucri)")
    assert len(first_page) == 25
    kinds = node_rows(national, "SELECT DISTINCT kind FROM registry_resource WHERE ucri = ANY(%s)", (first_page,))
    assert kinds == [("intelligent",)]
    tab.screenshot("explorer")
    tab.page.click("[data-testid=explorer-next]")
    tab.page.wait_for_load_state("networkidle")
    second_page = tab.page.locator("[data-testid=explorer-row]").evaluate_all("rows => rows.map(r => r.dataset.ucri)")
    assert second_page and not set(first_page) & set(second_page) and max(first_page) < min(second_page)

    export = tab.page.request.get(national.url + tab.page.get_attribute("[data-testid=explorer-csv]", "href"))
    assert export.status == 200
    exported = [row["ucri"] for row in csv.DictReader(io.StringIO(export.body().decode("utf-8-sig")))]
    expected = [row[0] for row in node_rows(national, """
        SELECT r.ucri FROM registry_resource r
        WHERE r.kind = 'intelligent' AND r.status = 'active' AND NOT EXISTS (
            SELECT 1 FROM registry_downtime d WHERE d.start <= now() AND d."end" > now()
              AND (d.resource_id = r.id OR d.site_id = r.site_id))
        ORDER BY r.ucri""")]
    assert exported == expected

    tab.allowed_statuses = {400}
    tab.goto(national.url + "/explorer?max_pue=abc", status=400)
    assert tab.page.locator("[data-testid=filter-error]").count() == 1
    tab.screenshot("explorer-bad-filter")


def test_federation_status_shows_each_peer(federation, visit):
    national, provincial = federation.national, federation.provincial
    tab = visit()
    sign_in(tab, national.url, "operator", "/federation-status")
    peer = tab.page.locator(f"[data-testid=federation-peer][data-entity-id='{provincial.url}']")
    assert peer.count() == 1
    assert peer.locator("[data-testid=peer-violations]").inner_text().strip().startswith("0")
    assert peer.locator("[data-testid=peer-lag]").count() == 1
    tab.screenshot("federation-status")
    staff = visit()
    staff.allowed_statuses = {403}
    sign_in(staff, national.url, "staff", "/federation-status")
    assert staff.page.locator("[data-testid=federation-denied]").count() == 1


def test_the_language_switches_to_chinese_and_back(federation, visit):
    tab = visit()
    tab.goto(federation.national.url + "/dashboard")
    assert tab.page.get_attribute("html", "lang") == "en"
    tab.page.click("[data-testid=language-zh-hans]")
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_attribute("html", "lang") == "zh-hans"
    assert tab.page.url.endswith("/dashboard")
    assert tab.page.inner_text("[data-testid=nav-dashboard]") == "算力看板"
    tab.screenshot("dashboard-zh-hans")
    tab.goto(federation.national.url + "/")
    assert tab.page.inner_text("[data-testid=nav-explorer]") == "资源目录"
    tab.screenshot("home-zh-hans")
    tab.page.click("[data-testid=language-en]")
    tab.page.wait_for_load_state("networkidle")
    assert tab.page.get_attribute("html", "lang") == "en"


@pytest.mark.parametrize("path", ["/", "/dashboard", "/explorer", "/federation-status", "/r/{ucri}"])
def test_pages_fit_a_phone(federation, visit, path):
    tab = visit(width=375, height=812)
    if path in ("/explorer", "/federation-status"):
        sign_in(tab, federation.national.url, "operator", path)
    else:
        tab.goto(federation.national.url + path.format(ucri=_first_ucri(federation.national)))
    tab.assert_fits_width()
    name = path.strip("/").split("/")[0] or "home"
    tab.screenshot(f"phone-{name}")
