import datetime as dt
import json
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.utils import timezone

from core.errors import ApplicationError
from core.models import AuditEntry, OutboxEntry
from registry import identifiers, services
from registry.models import Delegation, Downtime, Provider, ProviderMembership, Resource, Site
from registry.selectors import OPERATOR_GROUP, visible_to
from tests.support import factories

pytestmark = pytest.mark.django_db

ADMIN = "/admin/registry"


def make_user(username, *, provider=None, operator=False, superuser=False):
    user = get_user_model().objects.create_user(username, is_staff=True, is_superuser=superuser)
    if provider is not None:
        ProviderMembership.objects.create(user=user, provider=provider)
    if operator:
        user.groups.add(Group.objects.get(name=OPERATOR_GROUP))
    return user


def make_downtime(resource):
    start = timezone.now() + dt.timedelta(days=1)
    return services.downtime_create(provider=resource.provider, data={
        "resource": resource.ucri, "start": start, "end": start + dt.timedelta(hours=4),
        "classification": "scheduled", "reason": "maintenance"})


@pytest.fixture
def other(node):
    return factories.provider(code="GZ02", name="Other Compute Co")


@pytest.fixture
def other_site(other):
    return factories.site(other, name="Other DC")


@pytest.fixture
def other_resource(other_site):
    return factories.resource(other_site, local_id="other-1")


@pytest.fixture
def downtime(resource):
    return make_downtime(resource)


@pytest.fixture
def other_downtime(other_resource):
    return make_downtime(other_resource)


@pytest.fixture
def staff(provider):
    return make_user("alice", provider=provider)


@pytest.fixture
def operator(db):
    return make_user("olga", operator=True)


@pytest.fixture
def superuser(db):
    return make_user("root", superuser=True)


def resource_post(site, **overrides):
    data = {
        "site": str(site.pk), "local_id": "new-1", "name": "H800 pool", "kind": "intelligent",
        "accelerator": "GPU", "accelerator_model": "H800", "accelerator_count": "8", "node_count": "1",
        "status": "active", "fp64_tflops": "", "fp32_tflops": "", "fp16_tflops": "", "int8_tops": "",
        "memory_gb": "640", "storage_tb": "", "price_per_hour": "12.5", "price_unit": "card",
        "price_per_million_tokens": "", "endpoints": "slurm|https://slurm.example.cn\napi|https://api.example.cn",
    }
    data.update(overrides)
    return data


def resource_edit_post(resource, **overrides):
    fields = {name: getattr(resource, name) for name in (
        "local_id", "name", "kind", "accelerator", "accelerator_model", "accelerator_count", "node_count",
        "status", "fp64_tflops", "fp32_tflops", "fp16_tflops", "int8_tops", "memory_gb", "storage_tb",
        "price_per_hour", "price_unit", "price_per_million_tokens")}
    data = resource_post(resource.site, **{k: "" if v is None else str(v) for k, v in fields.items()})
    data["endpoints"] = "\n".join(f"{e['type']}|{e['url']}" for e in resource.endpoints)
    data["expected_version"] = str(resource.version)
    data.update(overrides)
    return data


def form_errors(response):
    return response.context["adminform"].form.errors


def listed(client, model):
    response = client.get(f"{ADMIN}/{model}/")
    assert response.status_code == 200
    return set(response.context["cl"].result_list), response.content.decode()


# Who sees what ----------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["/admin/", f"{ADMIN}/resource/", f"{ADMIN}/site/", f"{ADMIN}/resource/import/"])
def test_anonymous_is_sent_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_provider_staff_see_only_their_own_rows(client, staff, site, resource, downtime, other_site,
                                                other_resource, other_downtime):
    client.force_login(staff)

    resources, html = listed(client, "resource")
    assert resources == {resource}
    assert resource.ucri in html and other_resource.ucri not in html
    sites, html = listed(client, "site")
    assert sites == {site}
    assert "Other DC" not in html
    downtimes, html = listed(client, "downtime")
    assert downtimes == {downtime}
    assert str(other_downtime.pk) not in html
    providers, _ = listed(client, "provider")
    assert providers == {resource.provider}


def test_operator_sees_every_provider(client, operator, resource, other_resource, downtime, other_downtime):
    client.force_login(operator)
    assert listed(client, "resource")[0] == {resource, other_resource}
    assert listed(client, "site")[0] == {resource.site, other_resource.site}
    assert listed(client, "downtime")[0] == {downtime, other_downtime}
    assert listed(client, "provider")[0] == {resource.provider, other_resource.provider}


def test_another_providers_pages_are_denied_without_revealing_them(client, staff, other_site, other_resource,
                                                                   other_downtime):
    client.force_login(staff)
    missing = {"site": uuid.uuid4(), "resource": 10**9, "downtime": uuid.uuid4(), "provider": 10**9}
    for model, obj in (("site", other_site), ("resource", other_resource), ("downtime", other_downtime),
                       ("provider", other_resource.provider)):
        for page in ("change", "history", "delete"):
            response = client.get(f"{ADMIN}/{model}/{obj.pk}/{page}/")
            as_if_missing = client.get(f"{ADMIN}/{model}/{missing[model]}/{page}/")
            assert response.status_code in (302, 403), (model, page)  # never 200, never 500
            assert (response.status_code, response.get("Location")) == (
                as_if_missing.status_code, as_if_missing.get("Location")), (model, page)
        # Where the page exists for the staff's own rows, the answer is the missing-object redirect.
        assert client.get(f"{ADMIN}/{model}/{obj.pk}/change/")["Location"] == "/admin/"


def test_provider_staff_cannot_post_changes_to_another_providers_objects(client, staff, site, other_site,
                                                                         other_resource, other_downtime):
    client.force_login(staff)

    response = client.post(f"{ADMIN}/resource/{other_resource.pk}/change/",
                           resource_edit_post(other_resource, name="Hijacked", site=str(site.pk)))
    assert response.status_code == 302
    other_resource.refresh_from_db()
    assert (other_resource.name, other_resource.version, other_resource.site) == ("A100 training pool", 1, other_site)

    response = client.post(f"{ADMIN}/site/{other_site.pk}/change/", {
        "name": "Hijacked", "province": "52", "pue": "1.5", "green_ratio": "0.1", "rack_availability": "0.1",
        "expected_version": "1"})
    assert response.status_code == 302
    other_site.refresh_from_db()
    assert (other_site.name, other_site.version) == ("Other DC", 1)

    response = client.post(f"{ADMIN}/downtime/{other_downtime.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert Downtime.objects.filter(pk=other_downtime.pk).exists()

    response = client.post(f"{ADMIN}/resource/", {"action": "retire_resources", "post": "yes",
                                                  "_selected_action": [str(other_resource.pk)]})
    other_resource.refresh_from_db()
    assert other_resource.status == "active"


def test_provider_staff_cannot_pick_another_providers_site(client, staff, site, other_site):
    client.force_login(staff)
    form = client.get(f"{ADMIN}/resource/add/").context["adminform"].form
    assert set(form.fields["site"].queryset) == {site}
    assert "provider" not in form.fields

    response = client.post(f"{ADMIN}/resource/add/", resource_post(other_site))

    assert response.status_code == 200
    assert "site" in form_errors(response)
    assert not Resource.objects.filter(local_id="new-1").exists()


def test_provider_staff_cannot_create_a_downtime_on_another_providers_resource(client, staff, other_resource,
                                                                               other_site):
    client.force_login(staff)
    start = {"start_0": "2030-01-01", "start_1": "10:00:00", "end_0": "2030-01-01", "end_1": "12:00:00",
             "classification": "scheduled", "reason": "x"}

    response = client.post(f"{ADMIN}/downtime/add/", {**start, "resource": str(other_resource.pk)})
    assert response.status_code == 200
    assert "resource" in form_errors(response)
    response = client.post(f"{ADMIN}/downtime/add/", {**start, "site": str(other_site.pk)})
    assert response.status_code == 200
    assert "site" in form_errors(response)
    assert not Downtime.objects.exists()


def test_visibility_and_ownership_hold_below_the_admin(staff, operator, resource, site, other_resource, other_site):
    assert set(visible_to(Resource.objects.all(), staff)) == {resource}
    assert set(visible_to(Site.objects.all(), staff)) == {site}
    assert set(visible_to(Resource.objects.all(), operator)) == {resource, other_resource}
    assert not visible_to(Resource.objects.all(), AnonymousUser()).exists()
    assert not visible_to(Resource.objects.all(), make_user("nobody")).exists()

    with pytest.raises(ApplicationError) as create:
        services.resource_create(provider=site.provider, data=factories.resource_data(other_site))
    assert "site_id" in create.value.extra["errors"]
    with pytest.raises(ApplicationError) as update:
        services.resource_update(resource=resource, data={"site_id": str(other_site.pk)})
    assert "site_id" in update.value.extra["errors"]
    start = timezone.now()
    with pytest.raises(ApplicationError) as downtime:
        services.downtime_create(provider=site.provider, data={
            "resource": other_resource.ucri, "start": start, "end": start + dt.timedelta(hours=1),
            "classification": "scheduled", "reason": ""})
    assert "resource" in downtime.value.extra["errors"]


def test_provider_staff_are_kept_out_of_operator_pages(client, staff, provider, other):
    client.force_login(staff)
    assert client.get(f"{ADMIN}/providermembership/").status_code == 403
    assert client.get("/admin/core/auditentry/").status_code == 403
    assert client.get(f"{ADMIN}/provider/add/").status_code == 403
    assert client.get(f"{ADMIN}/provider/{provider.pk}/change/").status_code == 200  # view only
    response = client.post(f"{ADMIN}/provider/{provider.pk}/change/", {"name": "Renamed", "status": "active"})
    assert response.status_code == 403
    provider.refresh_from_db()
    assert provider.name == "Guizhou Cloud Compute Co"


def test_a_staff_user_without_a_role_sees_nothing(client, resource):
    client.force_login(make_user("nobody"))
    assert client.get(f"{ADMIN}/resource/").status_code == 403
    assert "registry" not in client.get("/admin/").content.decode().lower()


# Resources ---------------------------------------------------------------------------------------

def test_adding_a_resource_mints_a_ucri_and_writes_the_outbox(client, staff, provider, site, other):
    client.force_login(staff)

    response = client.post(f"{ADMIN}/resource/add/", resource_post(site, provider=str(other.pk)))

    assert response.status_code == 302, form_errors(response)
    resource = Resource.objects.get(local_id="new-1")
    assert resource.provider == provider  # a posted provider is ignored for provider staff
    assert identifiers.is_valid(resource.ucri) and resource.ucri.startswith("86.52.GZ01/")
    assert resource.version == 1
    assert resource.endpoints == [{"type": "slurm", "url": "https://slurm.example.cn"},
                                  {"type": "api", "url": "https://api.example.cn"}]
    assert OutboxEntry.objects.filter(type="resource", key=resource.ucri, version=1).count() == 1


def test_service_errors_become_form_errors(client, staff, site, resource):
    client.force_login(staff)

    duplicate = client.post(f"{ADMIN}/resource/add/", resource_post(site, local_id=resource.local_id))
    assert duplicate.status_code == 200
    assert "local_id" in form_errors(duplicate)
    node_price = client.post(f"{ADMIN}/resource/add/", resource_post(site, price_unit="node", node_count=""))
    assert "node_count" in form_errors(node_price)
    endpoint = client.post(f"{ADMIN}/resource/add/", resource_post(site, endpoints="slurm|http://insecure"))
    assert "endpoints" in form_errors(endpoint)
    assert Resource.objects.count() == 1


def test_editing_a_resource_bumps_its_version(client, staff, resource):
    client.force_login(staff)
    url = f"{ADMIN}/resource/{resource.pk}/change/"
    form = client.get(url).context["adminform"].form
    assert "ucri" not in form.fields and "version" not in form.fields  # shown read-only

    unchanged = client.post(url, resource_edit_post(resource))
    assert unchanged.status_code == 302
    resource.refresh_from_db()
    assert resource.version == 1

    response = client.post(url, resource_edit_post(resource, name="Renamed pool"))
    assert response.status_code == 302
    resource.refresh_from_db()
    assert (resource.name, resource.version) == ("Renamed pool", 2)
    assert OutboxEntry.objects.filter(type="resource", key=resource.ucri, version=2).exists()

    stale = client.post(url, resource_edit_post(resource, name="Lost update", expected_version="1"))
    assert stale.status_code == 200
    assert "version 2" in str(form_errors(stale))


def test_retire_action_asks_first_is_final_and_idempotent(client, staff, resource):
    client.force_login(staff)
    action = {"action": "retire_resources", "_selected_action": [str(resource.pk)]}

    confirm = client.post(f"{ADMIN}/resource/", action)
    assert confirm.status_code == 200
    assert b"Retirement is final" in confirm.content
    resource.refresh_from_db()
    assert resource.status == "active"

    assert client.post(f"{ADMIN}/resource/", {**action, "post": "yes"}).status_code == 302
    resource.refresh_from_db()
    assert (resource.status, resource.version) == ("retired", 2)
    assert resource.retired_at is not None
    assert OutboxEntry.objects.filter(type="resource", op="retire", key=resource.ucri).count() == 1

    assert client.post(f"{ADMIN}/resource/", {**action, "post": "yes"}).status_code == 302
    resource.refresh_from_db()
    assert (resource.status, resource.version) == ("retired", 2)
    assert OutboxEntry.objects.filter(type="resource", key=resource.ucri).count() == 2


def test_a_retired_resource_cannot_be_edited(client, staff, resource):
    services.resource_retire(resource=resource)
    resource.refresh_from_db()
    client.force_login(staff)
    url = f"{ADMIN}/resource/{resource.pk}/change/"

    page = client.get(url)
    assert page.status_code == 200
    assert not page.context["has_change_permission"]
    assert 'name="_save"' not in page.content.decode()

    response = client.post(url, resource_edit_post(resource, name="Revived", status="active"))
    assert response.status_code == 403
    resource.refresh_from_db()
    assert (resource.status, resource.name, resource.version) == ("retired", "A100 training pool", 2)


def test_only_operators_may_suspend_any_resource(client, staff, operator, resource, other_resource):
    action = {"action": "suspend_resources", "_selected_action": [str(resource.pk)]}
    client.force_login(staff)
    client.post(f"{ADMIN}/resource/", action)
    resource.refresh_from_db()
    assert resource.status == "active"

    client.force_login(operator)
    response = client.post(f"{ADMIN}/resource/", {**action, "_selected_action": [str(resource.pk),
                                                                                 str(other_resource.pk)]})
    assert response.status_code == 302
    assert set(Resource.objects.values_list("status", flat=True)) == {"suspended"}
    assert AuditEntry.objects.filter(action="resource.suspended", actor="user:olga").count() == 2


def test_operators_pick_the_provider_when_adding(client, superuser, other, other_site, site):
    client.force_login(superuser)
    form = client.get(f"{ADMIN}/resource/add/").context["adminform"].form
    assert set(form.fields["provider"].queryset) == {site.provider, other}

    mismatch = client.post(f"{ADMIN}/resource/add/", resource_post(site, provider=str(other.pk)))
    assert "site" in form_errors(mismatch)

    response = client.post(f"{ADMIN}/resource/add/", resource_post(other_site, provider=str(other.pk)))
    assert response.status_code == 302
    assert Resource.objects.get(local_id="new-1").provider == other

    response = client.post(f"{ADMIN}/site/add/", {"provider": str(other.pk), "name": "Zunyi DC", "province": "52",
                                                   "pue": "1.25", "green_ratio": "0.6", "rack_availability": "0.4"})
    assert response.status_code == 302
    created = Site.objects.get(name="Zunyi DC")
    assert (created.provider, created.hub) == (other, "gz")


# Sites and downtimes ------------------------------------------------------------------------------

def test_provider_staff_add_and_edit_their_sites(client, staff, provider):
    client.force_login(staff)
    data = {"name": "Gui'an DC 3", "province": "52", "pue": "1.3", "wue": "", "cue": "", "green_ratio": "0.5",
            "rack_availability": "0.7"}
    assert client.post(f"{ADMIN}/site/add/", data).status_code == 302
    created = Site.objects.get(name="Gui'an DC 3")
    assert created.provider == provider

    bad = client.post(f"{ADMIN}/site/{created.pk}/change/", {**data, "pue": "0.5", "expected_version": "1"})
    assert "pue" in form_errors(bad)
    good = client.post(f"{ADMIN}/site/{created.pk}/change/", {**data, "pue": "1.1", "expected_version": "1"})
    assert good.status_code == 302
    created.refresh_from_db()
    assert (created.pue, created.version) == (1.1, 2)


def test_provider_staff_announce_and_delete_downtimes(client, staff, resource):
    client.force_login(staff)
    response = client.post(f"{ADMIN}/downtime/add/", {
        "resource": str(resource.pk), "start_0": "2030-01-01", "start_1": "10:00:00", "end_0": "2030-01-01",
        "end_1": "12:00:00", "classification": "scheduled", "reason": "firmware"})
    assert response.status_code == 302
    downtime = Downtime.objects.get()
    assert (downtime.provider, downtime.resource) == (resource.provider, resource)

    assert client.post(f"{ADMIN}/downtime/{downtime.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Downtime.objects.exists()
    assert OutboxEntry.objects.filter(type="downtime", op="retire", key=str(downtime.pk)).exists()


# Providers ---------------------------------------------------------------------------------------

def _public_key() -> str:
    from identity import crypto

    return json.dumps(crypto.public_jwk(crypto.generate_private_key()))


def test_operator_approves_a_provider_and_its_credential_is_issued(client, operator, node):
    client.force_login(operator)
    response = client.post(f"{ADMIN}/provider/add/", {"name": "Zunyi Compute", "uscc": factories.valid_uscc(777),
                                                      "code": "zy01", "public_key": _public_key()})
    assert response.status_code == 302
    provider = Provider.objects.get(name="Zunyi Compute")
    assert provider.prefix == node.prefix + ".ZY01"
    assert Delegation.objects.filter(prefix=provider.prefix, kind="provider").exists()
    assert AuditEntry.objects.filter(action="provider.approved", actor="user:olga").exists()
    assert provider.credential_status == "valid" and provider.credential.count(".") == 2
    assert AuditEntry.objects.filter(action="credential.issued", actor="user:olga").exists()

    invalid = client.post(f"{ADMIN}/provider/add/", {"name": "Bad", "uscc": "91520000MA00000000", "code": "BAD1",
                                                     "public_key": _public_key()})
    assert invalid.status_code == 200
    assert "uscc" in form_errors(invalid)
    taken = client.post(f"{ADMIN}/provider/add/", {"name": "Again", "uscc": factories.valid_uscc(778),
                                                   "code": "ZY01", "public_key": _public_key()})
    assert "code" in form_errors(taken)
    bad_key = client.post(f"{ADMIN}/provider/add/", {"name": "Keyless", "uscc": factories.valid_uscc(779),
                                                     "code": "KL01", "public_key": '{"kty": "RSA"}'})
    assert "public_key" in form_errors(bad_key)
    assert not Provider.objects.filter(name__in=["Bad", "Again", "Keyless"]).exists()


def test_operator_suspends_a_provider_with_a_reason(client, operator, provider):
    client.force_login(operator)
    url = f"{ADMIN}/provider/{provider.pk}/change/"

    missing_reason = client.post(url, {"name": provider.name, "status": "suspended", "reason": ""})
    assert "reason" in form_errors(missing_reason)

    response = client.post(url, {"name": provider.name, "status": "suspended", "reason": "unpaid fees"})
    assert response.status_code == 302
    provider.refresh_from_db()
    assert (provider.status, provider.version) == ("suspended", 2)
    assert AuditEntry.objects.filter(action="provider.suspended", data__reason="unpaid fees").exists()


def test_admin_suspension_reaches_the_credential_and_status_list(client, operator, node):
    from identity import credentials, statuslists
    from identity.models import StatusList

    onboarded = credentials.onboard(name="Listed", uscc=factories.valid_uscc(901), code="LS01", actor="t")
    client.force_login(operator)
    url = f"{ADMIN}/provider/{onboarded.provider.pk}/change/"
    assert client.post(url, {"name": "Listed", "status": "suspended", "reason": "audit"}).status_code == 302
    provider = Provider.objects.get(pk=onboarded.provider.pk)
    assert provider.credential_status == "suspended"
    status_list = StatusList.objects.get(pk=onboarded.credential.status_list_id)
    assert bytes(status_list.statuses)[onboarded.credential.status_index] == statuslists.SUSPENDED
    assert status_list.token_version == status_list.version  # re-signed at once
    assert client.post(url, {"name": "Listed", "status": "revoked", "reason": "fraud"}).status_code == 302
    assert Provider.objects.get(pk=provider.pk).credential_status == "revoked"
    # Revocation is final: the change page is read-only now.
    assert client.post(url, {"name": "Listed", "status": "active", "reason": "undo"}).status_code in (302, 403)
    assert Provider.objects.get(pk=provider.pk).status == "revoked"


def test_operator_registers_a_client_in_the_admin(client, operator, node):
    from identity.models import Client

    client.force_login(operator)
    response = client.post(f"{ADMIN.replace('/registry', '/identity')}/client/add/", {
        "client_id": "gz-scheduler", "public_keys": _public_key(), "scope_list": ["resources:read"],
        "is_active": "on"})
    assert response.status_code == 302, form_errors(response)
    assert Client.objects.get(client_id="gz-scheduler").scopes == "resources:read"
    bad = client.post(f"{ADMIN.replace('/registry', '/identity')}/client/add/", {
        "client_id": "writer", "public_keys": _public_key(), "scope_list": ["resources:write"], "is_active": "on"})
    assert bad.status_code == 200 and not Client.objects.filter(client_id="writer").exists()


def test_operator_manages_memberships_with_an_audit_trail(client, operator, provider):
    client.force_login(operator)
    user = make_user("carol")
    response = client.post(f"{ADMIN}/providermembership/add/", {"user": str(user.pk), "provider": str(provider.pk)})
    assert response.status_code == 302
    assert ProviderMembership.objects.get(user=user).provider == provider
    assert AuditEntry.objects.filter(action="membership.granted", target_key="carol").exists()


# Every page renders ------------------------------------------------------------------------------

def test_pages_render_for_each_role(client, staff, operator, superuser, resource, downtime):
    provider, site = resource.provider, resource.site
    pages = [
        "/admin/", f"{ADMIN}/resource/", f"{ADMIN}/resource/add/", f"{ADMIN}/resource/{resource.pk}/change/",
        f"{ADMIN}/resource/import/", f"{ADMIN}/site/", f"{ADMIN}/site/add/", f"{ADMIN}/site/{site.pk}/change/",
        f"{ADMIN}/downtime/", f"{ADMIN}/downtime/add/", f"{ADMIN}/downtime/{downtime.pk}/change/",
        f"{ADMIN}/provider/", f"{ADMIN}/provider/{provider.pk}/change/",
    ]
    operator_pages = [f"{ADMIN}/provider/add/", f"{ADMIN}/providermembership/", f"{ADMIN}/providermembership/add/",
                      "/admin/core/auditentry/"]
    for user, urls in ((staff, pages), (superuser, pages + operator_pages),
                       (operator, ["/admin/", f"{ADMIN}/resource/", f"{ADMIN}/resource/{resource.pk}/change/",
                                   *operator_pages])):
        client.force_login(user)
        for url in urls:
            assert client.get(url).status_code == 200, (user.username, url)


def test_downtime_resource_autocomplete_offers_only_own_resources(client, staff, resource, other_resource):
    client.force_login(staff)
    response = client.get("/admin/autocomplete/", {"app_label": "registry", "model_name": "downtime",
                                                   "field_name": "resource", "term": ""})
    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [str(resource.pk)]


def test_export_action_downloads_the_import_format(client, staff, resource):
    client.force_login(staff)
    response = client.post(f"{ADMIN}/resource/", {"action": "export_csv", "_selected_action": [str(resource.pk)]})
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].startswith("local_id,name,kind,site,")
    assert lines[1].startswith(f"{resource.local_id},A100 training pool,intelligent,Gui'an DC 1,GPU,")
