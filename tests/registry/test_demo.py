import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from stdnum.cn import uscc

from core.models import AuditEntry, OutboxEntry
from registry import demo, identifiers, records, reference, selectors
from registry.models import Provider, Resource, Site

pytestmark = pytest.mark.django_db


def run_demo(*args: str) -> dict:
    out = StringIO()
    call_command("cir_demo", "--json", *args, stdout=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def latest_entries(type_: str) -> dict[str, OutboxEntry]:
    return {e.key: e for e in OutboxEntry.objects.filter(type=type_).order_by("seq")}


def test_builds_a_realistic_catalog(node):
    result = run_demo("--seed", "7", "--resources", "300")
    assert {"resources", "sample", "retired_sample"} <= set(result)
    assert result["resources"] == 300 == Resource.objects.count()
    assert len(result["sample"]) == 20 and len(result["retired_sample"]) >= 2

    resources = list(Resource.objects.select_related("provider", "site"))
    assert {r.hub for r in resources} >= set(reference.hubs())
    assert None in {r.hub for r in resources}  # some sites lie outside the hubs
    assert {r.kind for r in resources} == {"general", "intelligent", "super"}
    assert {"CPU", "GPU", "NPU"} <= {r.accelerator for r in resources}
    assert Provider.objects.count() == demo.PROVIDERS
    for provider in Provider.objects.all():
        assert uscc.is_valid(provider.uscc)
        assert identifiers.prefix_within(provider.prefix, node.prefix) and provider.prefix != node.prefix
    for r in resources:
        assert identifiers.is_valid(r.ucri)
        assert identifiers.prefix_of(r.ucri) == r.provider.prefix
        assert (r.province, r.hub, r.pue, r.green_ratio) == (r.site.province, r.site.hub, r.site.pue,
                                                              r.site.green_ratio)
        assert r.authority == node.entity_id and r.source == "local"
        assert all(e["url"].startswith("https://") for e in r.endpoints)
        if r.price_unit == "node":
            assert r.node_count
    a100 = next(r for r in resources if r.accelerator_model == "A100 SXM 80GB")
    assert a100.memory_gb == 80 * a100.accelerator_count  # figures are totals for the whole resource
    assert a100.fp16_tflops == pytest.approx(312 * a100.accelerator_count)
    sites = Site.objects.all()
    assert all(1.08 <= s.pue <= 1.5 and 0 <= s.green_ratio <= 1 for s in sites)


def test_every_write_enters_the_change_feed_with_the_services_record_shape(node):
    run_demo("--seed", "7", "--resources", "300")
    resources = latest_entries("resource")
    for r in Resource.objects.select_related("provider", "site"):
        entry = resources[r.ucri]
        assert entry.version == r.version and entry.authority == r.authority
        assert entry.record == records.resource_feed(r)
    for provider in Provider.objects.all():
        assert latest_entries("provider")[provider.prefix].version == provider.version
    site_entries = latest_entries("site")
    for site in Site.objects.select_related("provider"):
        assert site_entries[str(site.id)].record == records.site_feed(site)


def test_a_few_resources_are_retired_with_tombstones(node, api):
    result = run_demo("--seed", "7", "--resources", "300")
    retired = Resource.objects.filter(status="retired")
    assert retired.count() == 2  # indexes 50 and 250: 0.5%
    assert sorted(result["retired_sample"]) == sorted(r.ucri for r in retired)
    for r in retired:
        assert r.version == 2 and r.retired_at is not None
        ops = list(OutboxEntry.objects.filter(type="resource", key=r.ucri).order_by("seq")
                   .values_list("op", "version", "record__status"))
        assert ops[0][:2] == ("upsert", 1) and ops[-1] == ("retire", 2, "retired")
        assert selectors.resolve(r.ucri).status == 410
    for ucri in result["sample"]:
        assert api.get(f"/api/v1/resolve/{ucri}").status_code == 200


def test_the_same_seed_twice_changes_nothing(node):
    first = run_demo("--seed", "3", "--resources", "250")
    counts = [m.objects.count() for m in (Provider, Site, Resource, OutboxEntry, AuditEntry)]
    versions = dict(Resource.objects.values_list("ucri", "version"))
    second = run_demo("--seed", "3", "--resources", "250")
    assert second["created"] == {"providers": 0, "sites": 0, "resources": 0}
    assert (second["sample"], second["retired_sample"], second["resources"]) == (
        first["sample"], first["retired_sample"], first["resources"])
    assert [m.objects.count() for m in (Provider, Site, Resource, OutboxEntry, AuditEntry)] == counts
    assert dict(Resource.objects.values_list("ucri", "version")) == versions


def test_growing_keeps_the_first_resources_and_matches_the_plan(node):
    run_demo("--seed", "5", "--resources", "200")
    before = dict(Resource.objects.values_list("local_id", "ucri"))
    result = run_demo("--seed", "5", "--resources", "300")
    assert result["created"]["resources"] == 100 and result["resources"] == 300
    after = dict(Resource.objects.values_list("local_id", "ucri"))
    assert {k: after[k] for k in before} == before
    # Each resource is exactly what the pure plan gives for its index, whatever the run's size.
    plan = demo.plan_providers(5)
    prefixes = {p.code: p.prefix for p in Provider.objects.all()}
    for index in range(300):
        spec = demo.resource_spec(plan, 5, index)
        expected = identifiers.compose(prefixes[plan.providers[spec.provider].code], spec.body)
        assert after[demo.local_id(index)] == expected


def test_different_seeds_give_different_catalogs():
    one, two = demo.plan_providers(1), demo.plan_providers(2)
    assert [p.uscc for p in one.providers] != [p.uscc for p in two.providers]
    bodies_one = {demo.resource_spec(one, 1, i).body for i in range(100)}
    bodies_two = {demo.resource_spec(two, 2, i).body for i in range(100)}
    assert not bodies_one & bodies_two
    assert demo.resource_spec(one, 1, 42) == demo.resource_spec(demo.plan_providers(1), 1, 42)


def test_another_seed_on_the_same_node_is_refused(node):
    run_demo("--seed", "1", "--resources", "10")
    with pytest.raises(CommandError, match="prefix_taken"):
        run_demo("--seed", "2", "--resources", "10")


def test_an_uninitialised_node_is_refused(db):
    with pytest.raises(CommandError, match="node_not_initialized"):
        run_demo("--resources", "10")
    assert not Provider.objects.exists()


def test_bad_resource_count_is_refused(node):
    with pytest.raises(CommandError):
        run_demo("--resources", "-1")


def test_plain_output_is_a_short_summary(node):
    out = StringIO()
    call_command("cir_demo", "--seed", "7", "--resources", "20", stdout=out, stderr=StringIO())
    assert "20 resources" in out.getvalue()


def test_demo_load_prints_valid_reports_for_one_providers_active_resources(node):
    from registry.reporter import parse_lines

    run_demo("--seed", "5", "--resources", "80")
    provider = Provider.objects.order_by("prefix").first()
    out = StringIO()
    call_command("cir_demo_load", "--prefix", provider.prefix, "--share", "1", stdout=out)
    reports = list(parse_lines(out.getvalue().splitlines(), valid_for=60))
    active = {r.ucri: r for r in Resource.objects.filter(provider=provider, status=Resource.Status.ACTIVE)}
    assert reports and {r["ucri"] for r in reports} == set(active)
    for report in reports:
        resource = active[report["ucri"]]
        capacity = resource.node_count if resource.price_unit == "node" else resource.accelerator_count
        assert 0 <= report["available_units"] <= capacity


def test_demo_load_refuses_an_unknown_prefix(db):
    with pytest.raises(CommandError, match="no provider"):
        call_command("cir_demo_load", "--prefix", "86.99.NOPE")
