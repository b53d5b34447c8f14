"""Admin forms of the catalog. They parse and validate input; the write is one ``registry.services`` call.

The service is called while the form validates (``_post_clean``), inside a savepoint of the admin's
own transaction: that way an ``ApplicationError`` (``.extra["errors"]`` per field) becomes form errors
on the re-rendered form instead of a 500, and a failed call leaves nothing behind. ``save()`` then only
hands the admin the object the service wrote.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError
from django.db import models, transaction

from core.errors import ApplicationError

from . import error_codes, imports, records, services
from .models import Downtime, Provider, Resource, Site, Source
from .reference import provinces
from .validators import parse_endpoints_cell

RESOURCE_FORM_FIELDS = tuple("site" if name == "site_id" else name for name in records.RESOURCE_FIELDS)
SITE_FORM_FIELDS = ("name", "province", "pue", "wue", "cue", "green_ratio", "rack_availability")


def writable_providers():
    return Provider.objects.filter(source=Source.LOCAL, status=Provider.Status.ACTIVE)


class ServiceForm(forms.ModelForm):
    # Bound per request by the admin (``registry.admin.RegistryAdmin.get_form``).
    own_provider: Provider | None = None  # the acting provider staff's provider; None for operators
    actor: str = "system"  # how the acting user is named in the audit log
    # Service error field names and error codes -> the form field that shows them.
    error_fields: ClassVar[dict[str, str]] = {}

    def apply(self, data: dict[str, Any]) -> models.Model:
        raise NotImplementedError

    def _post_clean(self) -> None:
        # Replaces ModelForm's construct_instance + full_clean: the service validates and writes.
        if self._errors:
            return
        try:
            with transaction.atomic():
                self.instance = self.apply(self.cleaned_data)
        except ApplicationError as exc:
            self._add_service_errors(exc)

    def _add_service_errors(self, exc: ApplicationError) -> None:
        field_errors = exc.extra.get("errors") or {self.error_fields.get(exc.code, ""): [exc.detail]}
        for name, messages in field_errors.items():
            target = self.error_fields.get(name, name)
            for message in messages:
                if target in self.fields:
                    self.add_error(target, message)
                else:
                    self.add_error(None, f"{name}: {message}" if name else message)

    def save(self, commit: bool = True) -> models.Model:
        return self.instance  # already written by the service

    def save_m2m(self) -> None:
        """Nothing to do: the service wrote everything."""


class CatalogForm(ServiceForm):
    """Sites, resources and downtimes: provider staff write for their own provider; an operator picks
    the provider when adding. ``expected_version`` guards against overwriting someone else's edit."""

    provider = forms.ModelChoiceField(queryset=Provider.objects.none(), help_text="The owning provider.")
    expected_version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        adding = self.instance._state.adding
        if "provider" in self.fields:
            if adding and self.own_provider is None:
                self.fields["provider"].queryset = writable_providers()
            else:
                del self.fields["provider"]
        if "expected_version" in self.fields:
            if adding:
                del self.fields["expected_version"]
            else:
                self.initial["expected_version"] = self.instance.version

    def owner(self) -> Provider:
        return self.own_provider or self.cleaned_data["provider"]


class SiteForm(CatalogForm):
    class Meta:
        model = Site
        fields = SITE_FORM_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "province" in self.fields:
            choices = [(p.code, f"{p.code} {p.name_en} {p.name_zh}") for p in provinces().values()]
            self.fields["province"].widget = forms.Select(choices=[("", "---------"), *choices])

    def apply(self, data: dict[str, Any]) -> Site:
        fields = {name: data[name] for name in SITE_FORM_FIELDS}
        if self.instance._state.adding:
            return services.site_create(provider=self.owner(), data=fields)
        return services.site_update(site=self.instance, data=fields, expected_version=data.get("expected_version"))


class ResourceForm(CatalogForm):
    endpoints = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One type|url per line, e.g. slurm|https://slurm.example.cn/slurmrestd; "
                  "types: slurm, kubernetes, openstack, hpc-portal, api.")
    error_fields: ClassVar[dict[str, str]] = {"site_id": "site", error_codes.LOCAL_ID_CONFLICT: "local_id"}

    class Meta:
        model = Resource
        fields = RESOURCE_FORM_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "status" in self.fields:  # retiring is the Retire action: final, so never a form edit
            self.fields["status"].choices = [(value, label) for value, label in Resource.Status.choices
                                             if value != Resource.Status.RETIRED]
        if not self.instance._state.adding:
            self.initial["endpoints"] = "\n".join(f"{e['type']}|{e['url']}" for e in self.instance.endpoints)

    def clean_endpoints(self) -> list[dict[str, str]]:
        text = self.cleaned_data["endpoints"]
        return parse_endpoints_cell(";".join(text.splitlines()))  # ValidationError -> field error

    def apply(self, data: dict[str, Any]) -> Resource:
        fields = {name: data[name] for name in RESOURCE_FORM_FIELDS if name != "site"}
        fields["site_id"] = data["site"]  # services accept a Site in place of its id
        if self.instance._state.adding:
            return services.resource_create(provider=self.owner(), data=fields)
        return services.resource_update(resource=self.instance, data=fields,
                                        expected_version=data.get("expected_version"))


class DowntimeForm(CatalogForm):
    error_fields: ClassVar[dict[str, str]] = {"site_id": "site"}

    class Meta:
        model = Downtime
        fields = ("resource", "site", "start", "end", "classification", "reason")

    def apply(self, data: dict[str, Any]) -> Downtime:
        resource, site = data.get("resource"), data.get("site")
        return services.downtime_create(provider=self.owner(), data={
            "resource": resource.ucri if resource else None,
            "site_id": site,
            "start": data["start"], "end": data["end"],
            "classification": data["classification"], "reason": data["reason"],
        })


class ProviderApproveForm(ServiceForm):
    code = forms.CharField(max_length=8, help_text="Delegated as <this node's prefix>.<code>: 1-8 characters "
                                                   "from 0-9 and A-Z, given once and never reused.")
    error_fields: ClassVar[dict[str, str]] = {error_codes.PREFIX_TAKEN: "code", error_codes.PREFIX_RESERVED: "code"}

    class Meta:
        model = Provider
        fields = ("name", "uscc")

    def apply(self, data: dict[str, Any]) -> Provider:
        return self.approve(name=data["name"], uscc=data["uscc"], code=data["code"])

    def approve(self, *, name: str, uscc: str, code: str) -> Provider:
        """A hook: an app that also issues credentials (identity) overrides it in its own admin."""
        return services.provider_approve(name=name, uscc=uscc, code=code, actor=self.actor)


class ProviderChangeForm(ServiceForm):
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="Required when the status changes; kept in the audit log. "
                                       "Revocation is final.")
    error_fields: ClassVar[dict[str, str]] = {"provider_revoked": "status"}

    class Meta:
        model = Provider
        fields = ("name", "status")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("status") not in (None, self.instance.status) and not data.get("reason", "").strip():
            self.add_error("reason", "give the reason for the status change")
        return data

    def apply(self, data: dict[str, Any]) -> Provider:
        provider = self.instance
        if data["name"].strip() != provider.name:
            provider = services.provider_update(provider=provider, name=data["name"], actor=self.actor)
        if data["status"] != provider.status:
            provider = self.set_status(provider=provider, status=data["status"], reason=data["reason"].strip())
        return provider

    def set_status(self, *, provider: Provider, status: str, reason: str) -> Provider:
        """A hook: an app that holds the provider's credentials (identity) overrides it in its own admin
        so that their status and the status list follow."""
        return services.provider_set_status(provider=provider, status=status, reason=reason, actor=self.actor)


class ResourceImportForm(forms.Form):
    provider = forms.ModelChoiceField(queryset=Provider.objects.none(), help_text="Import for this provider.")
    file = forms.FileField(help_text="UTF-8 CSV; columns: " + ", ".join(imports.COLUMNS) + ".")

    def __init__(self, *args: Any, own_provider: Provider | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.own_provider = own_provider
        if own_provider is None:
            self.fields["provider"].queryset = writable_providers()
        else:
            del self.fields["provider"]  # provider staff import for their own provider only

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        if upload.size > imports.MAX_BYTES:
            raise ValidationError(f"the file is larger than {imports.MAX_BYTES // (1024 * 1024)} MB; split it")
        return upload

    def target_provider(self) -> Provider:
        return self.own_provider or self.cleaned_data["provider"]
