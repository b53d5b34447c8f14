from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile

from core.models import OutboxEntry
from registry import identifiers, imports, services
from registry.models import ProviderMembership, Resource
from tests.support import factories

pytestmark = pytest.mark.django_db

SAMPLE = (Path(__file__).resolve().parents[1] / "data" / "resources-import-sample.csv").read_text(encoding="utf-8")
HEADER, *SAMPLE_ROWS = SAMPLE.strip().splitlines()


@pytest.fixture
def sites(provider, site):
    return {"Gui'an DC 1": site, "Gui'an DC 2": factories.site(provider, name="Gui'an DC 2", province="52")}


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join([header, *rows]) + "\n"


def with_cell(row: str, column: str, value: str) -> str:
    """The sample row with one cell replaced (the sample has no quoted cells)."""
    cells = row.split(",")
    cells[imports.COLUMNS.index(column)] = value
    return ",".join(cells)


def test_sample_file_imports_cleanly(provider, sites):
    report = imports.import_resources_csv(provider=provider, file_text=SAMPLE.encode())

    assert report.ok, report.errors
    assert report.applied
    assert sorted(report.created) == ["ga-910b-01", "ga-a100-01", "ga-cpu-01", "ga-hpc-01"]
    resources = {r.local_id: r for r in Resource.objects.filter(provider=provider)}
    assert len(resources) == 4
    assert all(identifiers.is_valid(r.ucri) and r.ucri.startswith("86.52.GZ01/") for r in resources.values())
    assert resources["ga-hpc-01"].status == "suspended"
    assert resources["ga-a100-01"].status == "active"
    assert resources["ga-a100-01"].endpoints == [
        {"type": "slurm", "url": "https://slurm.ga.example/slurmrestd"},
        {"type": "api", "url": "https://jobs.ga.example/v1"},
    ]
    assert resources["ga-910b-01"].fp64_tflops is None  # empty cell = null
    assert resources["ga-910b-01"].price_per_million_tokens == Decimal("2.0")
    assert resources["ga-cpu-01"].site == sites["Gui'an DC 2"]
    assert OutboxEntry.objects.filter(type="resource").count() == 4


def test_reimporting_the_same_file_changes_nothing(provider, sites):
    imports.import_resources_csv(provider=provider, file_text=SAMPLE)
    versions = dict(Resource.objects.values_list("local_id", "version"))
    outbox = OutboxEntry.objects.count()

    report = imports.import_resources_csv(provider=provider, file_text=SAMPLE)

    assert report.ok and report.applied
    assert (report.created, report.updated) == ([], [])
    assert len(report.unchanged) == 4
    assert Resource.objects.count() == 4
    assert dict(Resource.objects.values_list("local_id", "version")) == versions == dict.fromkeys(versions, 1)
    assert OutboxEntry.objects.count() == outbox


def test_a_modified_row_updates_that_resource_without_duplicating(provider, sites):
    imports.import_resources_csv(provider=provider, file_text=SAMPLE)
    changed = with_cell(SAMPLE_ROWS[0], "price_per_hour", "9.25")

    report = imports.import_resources_csv(provider=provider, file_text=csv_text(changed, *SAMPLE_ROWS[1:]))

    assert report.ok
    assert report.updated == ["ga-a100-01"]
    assert Resource.objects.count() == 4
    resource = Resource.objects.get(local_id="ga-a100-01")
    assert (resource.version, resource.price_per_hour) == (2, Decimal("9.25"))
    assert Resource.objects.get(local_id="ga-cpu-01").version == 1


@pytest.mark.parametrize(("column", "value", "message"), [
    ("accelerator", "TPU", "not a valid choice"),
    ("site", "Nowhere DC", "no site named"),
    ("endpoints", "slurm|http://slurm.ga.example", "https"),
    ("accelerator_count", "-3", "greater than or equal"),
    ("accelerator_count", "many", "whole number"),
    ("price_per_hour", "nan", "must be a number"),
    ("status", "retired", "active or suspended"),
    ("name", "", "null"),
])
def test_one_bad_row_imports_nothing_and_is_reported_by_number(provider, sites, column, value, message):
    rows = list(SAMPLE_ROWS)
    rows[2] = with_cell(rows[2], column, value)  # the file's row 4 (the header is row 1)

    report = imports.import_resources_csv(provider=provider, file_text=csv_text(*rows))

    assert not report.ok and not report.applied
    assert [(e.row, e.column) for e in report.errors] == [(4, column)]
    assert message in report.errors[0].message.lower()
    assert Resource.objects.count() == 0
    assert OutboxEntry.objects.filter(type="resource").count() == 0


def test_every_bad_row_is_reported(provider, sites):
    rows = [with_cell(SAMPLE_ROWS[0], "kind", "quantum"), SAMPLE_ROWS[1],
            with_cell(SAMPLE_ROWS[2], "storage_tb", "-1")]

    report = imports.import_resources_csv(provider=provider, file_text=csv_text(*rows))

    assert [(e.row, e.column) for e in report.errors] == [(2, "kind"), (4, "storage_tb")]
    assert Resource.objects.count() == 0


def test_a_site_of_another_provider_is_a_row_error(provider, sites):
    other = factories.provider(code="GZ02")
    factories.site(other, name="Other DC")
    row = with_cell(SAMPLE_ROWS[0], "site", "Other DC")

    report = imports.import_resources_csv(provider=provider, file_text=csv_text(row))

    assert [(e.row, e.column) for e in report.errors] == [(2, "site")]
    assert not Resource.objects.exists()


def test_a_retired_resource_is_not_revived(provider, sites):
    imports.import_resources_csv(provider=provider, file_text=SAMPLE)
    services.resource_retire(resource=Resource.objects.get(local_id="ga-cpu-01"))

    report = imports.import_resources_csv(provider=provider, file_text=SAMPLE)

    assert [(e.row, e.column) for e in report.errors] == [(4, "local_id")]
    assert "retired" in report.errors[0].message
    assert Resource.objects.get(local_id="ga-cpu-01").status == "retired"


@pytest.mark.parametrize(("header", "column", "message"), [
    (HEADER + ",colour", "colour", "unknown column"),
    (HEADER.replace(",storage_tb", ""), "storage_tb", "missing column"),
    (HEADER.replace("site,", "site_id,"), "site_id", "unknown column"),
])
def test_unknown_or_missing_columns_reject_the_file(provider, sites, header, column, message):
    rows = SAMPLE_ROWS if "colour" not in header else [row + ",red" for row in SAMPLE_ROWS]

    report = imports.import_resources_csv(provider=provider, file_text=csv_text(*rows, header=header))

    assert (report.errors[0].row, report.errors[0].column, report.errors[0].message) == (1, column, message)
    assert not Resource.objects.exists()


def test_non_utf8_file_is_rejected(provider, sites):
    data = csv_text(with_cell(SAMPLE_ROWS[0], "name", "贵安训练池")).encode("gbk")

    report = imports.import_resources_csv(provider=provider, file_text=data)

    assert [e.row for e in report.errors] == [2]
    assert "UTF-8" in report.errors[0].message


def test_utf8_with_byte_order_mark_is_accepted(provider, sites):
    report = imports.import_resources_csv(provider=provider, file_text=b"\xef\xbb\xbf" + SAMPLE.encode())
    assert report.ok and len(report.created) == 4


def test_too_many_rows_is_rejected(provider, sites, monkeypatch):
    monkeypatch.setattr(imports, "MAX_ROWS", 3)
    report = imports.import_resources_csv(provider=provider, file_text=SAMPLE)
    assert [(e.row, e.message) for e in report.errors] == [(5, "more than 3 rows; split the file")]
    assert not Resource.objects.exists()
    assert imports.import_resources_csv(provider=provider, file_text=SAMPLE, max_rows=4).ok


def test_the_admin_takes_fewer_rows_per_upload(client, provider, sites, monkeypatch):
    monkeypatch.setattr(imports, "ADMIN_MAX_ROWS", 2)
    client.force_login(staff_of(provider, "alice"))

    response = client.post("/admin/registry/resource/import/", {"file": SimpleUploadedFile("r.csv", SAMPLE.encode())})

    assert [e.message for e in response.context["report"].errors] == ["more than 2 rows; split the file"]


def test_duplicate_local_id_and_ragged_rows_are_errors(provider, sites):
    report = imports.import_resources_csv(provider=provider, file_text=csv_text(
        SAMPLE_ROWS[0], SAMPLE_ROWS[0], SAMPLE_ROWS[1] + ",extra"))
    assert [(e.row, e.column) for e in report.errors] == [(3, "local_id"), (4, "")]
    assert not Resource.objects.exists()


def test_dry_run_writes_nothing(provider, sites):
    report = imports.import_resources_csv(provider=provider, file_text=SAMPLE, dry_run=True)
    assert report.ok and not report.applied and len(report.created) == 4
    assert not Resource.objects.exists()
    assert not OutboxEntry.objects.filter(type="resource").exists()


def test_export_round_trips(provider, sites):
    imports.import_resources_csv(provider=provider, file_text=SAMPLE)
    exported = "".join(imports.export_resources_csv(Resource.objects.select_related("site").order_by("local_id")))

    report = imports.import_resources_csv(provider=provider, file_text=exported)

    assert report.ok and len(report.unchanged) == 4 and not report.updated


# Through the admin -------------------------------------------------------------------------------

def staff_of(provider, username):
    user = get_user_model().objects.create_user(username, is_staff=True)
    ProviderMembership.objects.create(user=user, provider=provider)
    return user


def test_admin_import_previews_then_imports(client, provider, sites):
    client.force_login(staff_of(provider, "alice"))
    url = "/admin/registry/resource/import/"
    assert client.get(url).status_code == 200

    preview = client.post(url, {"file": SimpleUploadedFile("r.csv", SAMPLE.encode(), "text/csv")})

    assert preview.status_code == 200
    assert preview.context["report"].ok
    assert not Resource.objects.exists()
    confirm = client.post(url, {"token": preview.context["token"]})
    assert confirm.status_code == 302
    assert Resource.objects.filter(provider=provider).count() == 4


def test_admin_import_reports_bad_rows(client, provider, sites):
    client.force_login(staff_of(provider, "alice"))
    bad = csv_text(with_cell(SAMPLE_ROWS[0], "accelerator", "TPU"))

    response = client.post("/admin/registry/resource/import/", {"file": SimpleUploadedFile("r.csv", bad.encode())})

    assert response.status_code == 200
    assert response.context["token"] is None
    assert b"Nothing was imported" in response.content
    assert not Resource.objects.exists()


def test_provider_staff_cannot_import_into_another_provider(client, provider, sites):
    other = factories.provider(code="GZ02")
    factories.site(other, name="Gui'an DC 9")
    client.force_login(staff_of(provider, "alice"))
    row = with_cell(SAMPLE_ROWS[0], "site", "Gui'an DC 9")

    # The form has no provider field for provider staff: a posted one is ignored.
    response = client.post("/admin/registry/resource/import/", {
        "provider": str(other.pk), "file": SimpleUploadedFile("r.csv", csv_text(row).encode())})

    report = response.context["report"]
    assert [(e.row, e.column) for e in report.errors] == [(2, "site")]
    assert response.context["provider"] == provider
    assert not Resource.objects.exists()


def test_a_preview_token_is_bound_to_its_user(client, provider, sites):
    client.force_login(staff_of(provider, "alice"))
    preview = client.post("/admin/registry/resource/import/",
                          {"file": SimpleUploadedFile("r.csv", SAMPLE.encode())})
    client.force_login(staff_of(provider, "bob"))

    response = client.post("/admin/registry/resource/import/", {"token": preview.context["token"]})

    assert response.status_code == 302
    assert not Resource.objects.exists()


def test_an_operator_imports_for_the_provider_they_pick(client, provider, sites):
    other = factories.provider(code="GZ02")
    client.force_login(get_user_model().objects.create_user("root", is_staff=True, is_superuser=True))
    url = "/admin/registry/resource/import/"

    missing = client.post(url, {"file": SimpleUploadedFile("r.csv", SAMPLE.encode())})
    assert "provider" in missing.context["form"].errors
    wrong = client.post(url, {"provider": str(other.pk), "file": SimpleUploadedFile("r.csv", SAMPLE.encode())})
    assert {e.column for e in wrong.context["report"].errors} == {"site"}  # other has no such sites

    preview = client.post(url, {"provider": str(provider.pk), "file": SimpleUploadedFile("r.csv", SAMPLE.encode())})
    client.post(url, {"token": preview.context["token"]})
    assert Resource.objects.filter(provider=provider).count() == 4


def test_nothing_is_imported_for_a_suspended_provider(provider, sites):
    services.provider_set_status(provider=provider, status="suspended", reason="test")
    provider.refresh_from_db()
    report = imports.import_resources_csv(provider=provider, file_text=SAMPLE)
    assert [(e.row, e.message) for e in report.errors] == [
        (1, "provider 86.52.GZ01 is suspended; nothing can be imported for it")]
    assert not Resource.objects.exists()
