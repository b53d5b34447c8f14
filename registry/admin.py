"""The Django admin: the operators' console and the providers' workspace (CONTRACT §14).

Who may do what is decided from the user's role, not only from Django permissions:
- superusers and platform operators (staff in the "Platform operators" group) see everything and act
  with the model permissions they hold (the group grants them, see migration 0002);
- provider staff (staff with a ``ProviderMembership``) see and edit only their own provider's sites,
  resources and downtimes, whatever permissions they hold, and may only view their own provider;
- anyone else sees nothing.
Every catalog write is one ``registry.services`` call (see ``registry.forms``); the admin parses and
renders.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from core import audit
from core.errors import ApplicationError
from core.models import AuditEntry

from . import identifiers, imports, services
from .forms import (
    RESOURCE_FORM_FIELDS,
    SITE_FORM_FIELDS,
    DowntimeForm,
    ProviderApproveForm,
    ProviderChangeForm,
    ResourceForm,
    ResourceImportForm,
    SiteForm,
    writable_providers,
)
from .models import Downtime, Provider, ProviderMembership, Resource, Site, Source
from .selectors import is_operator, provider_of_user, visible_to

IMPORT_STAGING_SECONDS = 3600
SHOWN_IMPORT_ERRORS = 500


@dataclass(frozen=True)
class Role:
    operator: bool  # superuser or platform operator
    provider: Provider | None  # set for provider staff only


def role_of(request: HttpRequest) -> Role:
    """The user's role, worked out once per request (the admin asks many times per page)."""
    role = getattr(request, "_cir_role", None)
    if role is None:
        operator = is_operator(request.user)
        role = Role(operator, None if operator else provider_of_user(request.user))
        request._cir_role = role
    return role


class RegistryAdmin(admin.ModelAdmin):
    """Binds the acting user to the service-backed forms; never saves objects itself."""

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        return type(form.__name__, (form,), {"own_provider": role_of(request).provider,
                                             "actor": audit.actor_of(request.user)})

    def save_model(self, request, obj, form, change) -> None:
        """Nothing: the form's service call has saved it (registry.forms.ServiceForm)."""


class ProviderOwnedAdmin(RegistryAdmin):
    """Sites, resources and downtimes: rows that belong to one provider."""

    # ``provider`` is not editable on the models; the forms declare their own field for an operator's add.
    exclude = ("provider",)
    form_fields: tuple[str, ...] = ()
    readonly_on_change: tuple[str, ...] = ()

    def get_queryset(self, request):
        return visible_to(super().get_queryset(request), request.user)

    def is_editable(self, obj) -> bool:
        return obj.source == Source.LOCAL  # mirrors are another node's data

    def _owns(self, request, obj) -> bool:
        provider = role_of(request).provider
        return provider is not None and (obj is None or obj.provider_id == provider.pk)

    def has_module_permission(self, request) -> bool:
        role = role_of(request)
        return role.provider is not None or (role.operator and super().has_module_permission(request))

    def has_view_permission(self, request, obj=None) -> bool:
        role = role_of(request)
        if role.provider is not None:
            return self._owns(request, obj)
        return role.operator and super().has_view_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        role = role_of(request)
        return role.provider is not None or (role.operator and super().has_add_permission(request))

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and not self.is_editable(obj):
            return False
        role = role_of(request)
        if role.provider is not None:
            return self._owns(request, obj)
        return role.operator and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # resources are retired, never deleted; sites are referenced by them

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_on_change if obj is not None else ()

    def get_fields(self, request, obj=None):
        if obj is None:
            picks_provider = role_of(request).provider is None
            return [*(("provider",) if picks_provider else ()), *self.form_fields]
        extra = ("expected_version",) if self.has_change_permission(request, obj) else ()
        return [*self.readonly_on_change, *self.form_fields, *extra]

    def local_sites(self, request) -> QuerySet[Site]:
        return visible_to(Site.objects.filter(source=Source.LOCAL).select_related("provider"), request.user)

    def site_field(self, field, request):
        if role_of(request).provider is None:  # operators choose among every provider's sites
            field.label_from_instance = lambda site: f"{site.provider.prefix} · {site.name}"
        return field


@admin.register(Site)
class SiteAdmin(ProviderOwnedAdmin):
    form = SiteForm
    form_fields = SITE_FORM_FIELDS
    readonly_on_change = ("provider", "hub", "version", "authority", "source", "synced_at", "created_at",
                          "updated_at")
    list_display = ("name", "provider", "province", "hub", "pue", "green_ratio", "rack_availability", "version")
    list_select_related = ("provider",)
    list_filter = ("hub",)
    search_fields = ("name",)


@admin.register(Resource)
class ResourceAdmin(ProviderOwnedAdmin):
    form = ResourceForm
    form_fields = RESOURCE_FORM_FIELDS
    readonly_on_change = ("ucri", "provider", "version", "retired_at", "authority", "source", "synced_at",
                          "created_at", "updated_at")
    list_display = ("ucri", "local_id", "name", "provider", "site", "accelerator", "accelerator_count", "status",
                    "version")
    list_select_related = ("provider", "site")
    search_fields = ("=ucri", "=local_id", "name")
    show_full_result_count = False  # a node may hold a million resources
    actions = ("retire_resources", "suspend_resources", "release_resources", "export_csv")

    def is_editable(self, obj) -> bool:
        return super().is_editable(obj) and not obj.is_retired  # retirement is final

    def get_list_filter(self, request):
        base = ("status", "kind", "accelerator", "price_unit")
        if role_of(request).provider is None:
            return (*base, "provider")
        return (*base, ("site", admin.RelatedOnlyFieldListFilter))  # only the provider's own sites

    def get_search_results(self, request, queryset, search_term):
        try:  # a pasted UCRI in any accepted spelling finds its resource
            return queryset.filter(ucri=identifiers.canonicalize(search_term)), False
        except identifiers.UCRIError:
            return super().get_search_results(request, queryset, search_term)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "site":
            kwargs["queryset"] = self.local_sites(request)
            return self.site_field(super().formfield_for_foreignkey(db_field, request, **kwargs), request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # Actions --------------------------------------------------------------------------------------

    def has_retire_permission(self, request) -> bool:
        return role_of(request).provider is not None or request.user.is_superuser

    def has_suspend_permission(self, request) -> bool:
        return role_of(request).operator  # CONTRACT §9: an operator may suspend any resource

    @admin.action(description="Retire selected resources (final: a UCRI is never reused)",
                  permissions=["retire"])
    def retire_resources(self, request, queryset):
        if request.POST.get("post") != "yes":  # final, so ask first (like Django's delete)
            return TemplateResponse(request, "admin/registry/resource/retire_confirmation.html", {
                **self.admin_site.each_context(request), "opts": self.opts, "title": "Retire resources?",
                "resources": queryset, "action_checkbox_name": ACTION_CHECKBOX_NAME,
            })
        retired = 0
        for resource in queryset:
            if resource.is_retired:
                continue  # idempotent: already retired stays as it is
            try:
                services.resource_retire(resource=resource)
            except ApplicationError as exc:
                self.message_user(request, f"{resource}: {exc.detail}", messages.ERROR)
            else:
                retired += 1
        self.message_user(request, f"Retired {retired} resource(s).", messages.SUCCESS)
        return None

    @admin.action(description="Suspend selected resources (operator)", permissions=["suspend"])
    def suspend_resources(self, request, queryset):
        suspended = 0
        for resource in queryset.exclude(status=Resource.Status.RETIRED).filter(operator_hold=False):
            try:
                services.operator_suspend_resource(resource=resource, actor=audit.actor_of(request.user),
                                                   reason="suspended by an operator in the admin")
            except ApplicationError as exc:
                self.message_user(request, f"{resource}: {exc.detail}", messages.ERROR)
            else:
                suspended += 1
        self.message_user(request, f"Suspended {suspended} resource(s).", messages.SUCCESS)

    @admin.action(description="Lift the operator's suspension (the provider may then reactivate)",
                  permissions=["suspend"])
    def release_resources(self, request, queryset):
        released = 0
        for resource in queryset.filter(operator_hold=True):
            services.operator_release_resource(resource=resource, actor=audit.actor_of(request.user),
                                               reason="lifted by an operator in the admin")
            released += 1
        self.message_user(request, f"Lifted the hold on {released} resource(s).", messages.SUCCESS)

    @admin.action(description="Export selected resources as CSV (the import format)", permissions=["view"])
    def export_csv(self, request, queryset):
        rows = queryset.select_related("site").order_by("provider_id", "local_id").iterator(chunk_size=2000)
        response = StreamingHttpResponse(imports.export_resources_csv(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="resources.csv"'
        return response

    # CSV import -----------------------------------------------------------------------------------

    def get_urls(self):
        return [path("import/", self.admin_site.admin_view(self.import_view), name="registry_resource_import"),
                *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_import": self.has_add_permission(request)}
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload -> dry-run preview -> confirm. The previewed file waits in the cache under a token."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        own = role_of(request).provider
        if request.method == "POST" and "token" in request.POST:
            return self._confirm_import(request, request.POST["token"])
        form = ResourceImportForm(request.POST or None, request.FILES or None, own_provider=own)
        report = token = provider = None
        if request.method == "POST" and form.is_valid():
            provider = form.target_provider()
            data = form.cleaned_data["file"].read()
            report = imports.import_resources_csv(provider=provider, file_text=data, dry_run=True,
                                                  max_rows=imports.ADMIN_MAX_ROWS)
            if report.ok:
                token = secrets.token_urlsafe(24)
                cache.set(_staging_key(token), {"user": request.user.pk, "provider": provider.pk, "data": data},
                          IMPORT_STAGING_SECONDS)
        return self._import_page(request, form, report, token, provider)

    def _confirm_import(self, request: HttpRequest, token: str) -> HttpResponse:
        staged = cache.get(_staging_key(token))
        own = role_of(request).provider
        provider = None
        if staged and staged["user"] == request.user.pk:
            candidates = writable_providers() if own is None else writable_providers().filter(pk=own.pk)
            provider = candidates.filter(pk=staged["provider"]).first()
        if provider is None:
            self.message_user(request, "This preview has expired or is not yours; upload the file again.",
                              messages.ERROR)
            return redirect("admin:registry_resource_import")
        report = imports.import_resources_csv(provider=provider, file_text=staged["data"],
                                              max_rows=imports.ADMIN_MAX_ROWS)
        if not report.applied:  # something changed since the preview
            return self._import_page(request, ResourceImportForm(own_provider=own), report, None, provider)
        cache.delete(_staging_key(token))
        self.message_user(request, f"Imported for {provider.prefix}: {len(report.created)} created, "
                                   f"{len(report.updated)} updated, {len(report.unchanged)} unchanged.",
                          messages.SUCCESS)
        return redirect("admin:registry_resource_changelist")

    def _import_page(self, request, form, report, token, provider) -> TemplateResponse:
        return TemplateResponse(request, "admin/registry/resource/import.html", {
            **self.admin_site.each_context(request), "opts": self.opts, "title": "Import resources from CSV",
            "form": form, "report": report, "token": token, "provider": provider,
            "errors": report.errors[:SHOWN_IMPORT_ERRORS] if report else [],
            "more_errors": max(0, len(report.errors) - SHOWN_IMPORT_ERRORS) if report else 0,
            "columns": imports.COLUMNS, "max_rows": imports.ADMIN_MAX_ROWS,
        })


def _staging_key(token: str) -> str:
    return f"cir:resource-import:{token}"


@admin.register(Downtime)
class DowntimeAdmin(ProviderOwnedAdmin):
    form = DowntimeForm
    form_fields = ("resource", "site", "start", "end", "classification", "reason")
    readonly_on_change = ("provider", "version", "authority", "source", "created_at")
    list_display = ("start", "end", "classification", "resource", "site", "provider", "reason")
    list_select_related = ("provider", "resource", "site")
    list_filter = ("classification",)
    autocomplete_fields = ("resource",)

    def is_editable(self, obj) -> bool:
        return False  # there is no downtime update: delete it and announce a new one

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is not None and obj.source != Source.LOCAL:
            return False
        role = role_of(request)
        if role.provider is not None:
            return self._owns(request, obj)
        # Skip ProviderOwnedAdmin's blanket "no": downtimes are the one row an operator may delete.
        return role.operator and super(ProviderOwnedAdmin, self).has_delete_permission(request, obj)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "resource":
            kwargs["queryset"] = visible_to(
                Resource.objects.filter(source=Source.LOCAL).exclude(status=Resource.Status.RETIRED), request.user)
        elif db_field.name == "site":
            kwargs["queryset"] = self.local_sites(request)
            return self.site_field(super().formfield_for_foreignkey(db_field, request, **kwargs), request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def delete_model(self, request, obj) -> None:
        services.downtime_delete(downtime=obj)

    def delete_queryset(self, request, queryset) -> None:
        for downtime in queryset:
            try:
                services.downtime_delete(downtime=downtime)
            except ApplicationError as exc:
                self.message_user(request, f"{downtime}: {exc.detail}", messages.ERROR)

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except ApplicationError as exc:  # e.g. the provider is suspended
            self.message_user(request, exc.detail, messages.ERROR)
            return redirect(reverse("admin:registry_downtime_change", args=[object_id]))


@admin.register(Provider)
class ProviderAdmin(RegistryAdmin):
    add_form = ProviderApproveForm
    change_form = ProviderChangeForm
    # ``code`` is not editable on the model; the approval form declares its own.
    exclude = ("code",)
    readonly_on_change = ("prefix", "code", "uscc", "credential_status", "credential_expires_at", "version",
                          "authority", "source", "synced_at", "created_at", "updated_at")
    list_display = ("prefix", "name", "status", "credential_status", "version", "source")
    list_filter = ("status", "source")
    search_fields = ("name", "=prefix", "=uscc")

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = self.add_form if obj is None else self.change_form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_on_change if obj is not None else ()

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "uscc", "code"]
        editable = ["name", "status", "reason"] if self.has_change_permission(request, obj) else ["name", "status"]
        return [*self.readonly_on_change, *editable]

    def get_queryset(self, request):
        role = role_of(request)
        queryset = super().get_queryset(request)
        if role.provider is not None:
            return queryset.filter(pk=role.provider.pk)
        return queryset if role.operator else queryset.none()

    def has_module_permission(self, request) -> bool:
        role = role_of(request)
        return role.provider is not None or (role.operator and super().has_module_permission(request))

    def has_view_permission(self, request, obj=None) -> bool:
        role = role_of(request)
        if role.provider is not None:
            return obj is None or obj.pk == role.provider.pk
        return role.operator and super().has_view_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        return role_of(request).operator and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is not None and (obj.source != Source.LOCAL or obj.status == Provider.Status.REVOKED):
            return False  # mirrors are another node's; revocation is final
        return role_of(request).operator and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a provider's prefix is delegated once; revoke instead


class OperatorOnlyAdmin(admin.ModelAdmin):
    """Operators' business: provider staff are kept out whatever permissions they hold."""

    def has_module_permission(self, request) -> bool:
        return role_of(request).operator and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return role_of(request).operator and super().has_view_permission(request, obj)

    def has_add_permission(self, request) -> bool:
        return role_of(request).operator and super().has_add_permission(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return role_of(request).operator and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return role_of(request).operator and super().has_delete_permission(request, obj)


class ReadOnlyOperatorAdmin(OperatorOnlyAdmin):
    """Records written only by services (keys, credentials, peers, handoffs): operators look, nobody edits."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ProviderMembership)
class ProviderMembershipAdmin(OperatorOnlyAdmin):
    list_display = ("user", "provider")
    list_select_related = ("user", "provider")
    search_fields = ("user__username", "provider__name", "=provider__prefix")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":  # superusers are operators already; staff log in to the admin
            kwargs["queryset"] = get_user_model().objects.filter(is_staff=True, is_superuser=False)
        elif db_field.name == "provider":
            kwargs["queryset"] = Provider.objects.filter(source=Source.LOCAL)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    # A membership is access control, not catalog data: no outbox entry, but every grant is audited.
    def save_model(self, request, obj, form, change) -> None:
        with transaction.atomic():
            obj.save()
            audit.record(actor=audit.actor_of(request.user), action="membership.granted", target_type="user",
                         target_key=obj.user.get_username(), data={"provider": obj.provider.prefix})

    def delete_model(self, request, obj) -> None:
        with transaction.atomic():
            audit.record(actor=audit.actor_of(request.user), action="membership.revoked", target_type="user",
                         target_key=obj.user.get_username(), data={"provider": obj.provider.prefix})
            obj.delete()

    def delete_queryset(self, request, queryset) -> None:
        for membership in queryset.select_related("user", "provider"):
            self.delete_model(request, membership)


# core.models.AuditEntry is registered here because core imports no app and has no admin of its own.
@admin.register(AuditEntry)
class AuditEntryAdmin(OperatorOnlyAdmin):
    list_display = ("seq", "at", "actor", "action", "target_type", "target_key")
    list_filter = ("action", "target_type")
    search_fields = ("actor", "=target_key")
    readonly_fields = ("seq", "at", "actor", "action", "target_type", "target_key", "data", "prev_hash", "hash")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # the log is append-only; the hash chain would break anyway

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
