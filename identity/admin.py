"""Admin for identity: provider approval and status with credentials, OAuth clients, node keys
(public halves only) and issued credentials. Operators only, except the provider admin's own rules."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from django import forms
from django.contrib import admin

from core.errors import ApplicationError
from registry.admin import OperatorOnlyAdmin, ProviderAdmin, ReadOnlyOperatorAdmin
from registry.forms import ProviderApproveForm, ProviderChangeForm
from registry.models import Provider

from . import credentials, oauth
from .models import Client, NodeKey, ProviderCredential, StatusList

CREDENTIAL_STATUS_FOR = {Provider.Status.ACTIVE: "valid", Provider.Status.SUSPENDED: "suspended",
                         Provider.Status.REVOKED: "revoked"}


class CredentialedApproveForm(ProviderApproveForm):
    public_key = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text="The provider's public key as a JWK (EC P-256 or Ed25519) or a PEM public key. The credential "
                  "is bound to it; the provider authenticates with the matching private key.")
    error_fields: ClassVar[dict[str, str]] = {**ProviderApproveForm.error_fields, "invalid_key": "public_key"}

    def approve(self, *, name: str, uscc: str, code: str) -> Provider:
        return credentials.onboard(name=name, uscc=uscc, code=code, public_key=self.cleaned_data["public_key"],
                                   actor=self.actor).provider


class CredentialedChangeForm(ProviderChangeForm):
    def set_status(self, *, provider: Provider, status: str, reason: str) -> Provider:
        # Suspending or revoking here does what cir_provider_status does: credentials, status list, feed.
        return credentials.set_status(provider=provider, status=CREDENTIAL_STATUS_FOR[status], reason=reason,
                                      actor=self.actor)


admin.site.unregister(Provider)


@admin.register(Provider)
class CredentialedProviderAdmin(ProviderAdmin):
    add_form = CredentialedApproveForm
    change_form = CredentialedChangeForm

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return [*fields, "public_key"] if obj is None else fields


class ClientForm(forms.ModelForm):
    public_keys = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text='One public JWK, a list of JWKs or a JWK Set {"keys": [...]}. No secrets: private_key_jwt only.')
    scope_list = forms.MultipleChoiceField(choices=[(s, s) for s in oauth.SCOPES],
                                           widget=forms.CheckboxSelectMultiple, label="Scopes")

    class Meta:
        model = Client
        fields = ("client_id", "provider", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["public_keys"].initial = json.dumps({"keys": self.instance.jwks}, indent=2)
            self.fields["scope_list"].initial = self.instance.scopes.split()
            self.fields["client_id"].disabled = True

    def clean_public_keys(self) -> list[dict[str, Any]]:
        try:
            document = json.loads(self.cleaned_data["public_keys"])
        except ValueError as exc:
            raise forms.ValidationError("not JSON") from exc
        if isinstance(document, dict) and "keys" in document:
            document = document["keys"]
        return document if isinstance(document, list) else [document]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if "public_keys" in data and "scope_list" in data:
            try:
                oauth.validate_client(client_id=data.get("client_id") or self.instance.client_id,
                                      jwks=data["public_keys"], scopes=data["scope_list"],
                                      provider=data.get("provider"))
            except ApplicationError as exc:
                field = {"invalid_key": "public_keys", "invalid_scope": "scope_list"}.get(exc.code)
                self.add_error(field, exc.detail)
        return data


@admin.register(Client)
class ClientAdmin(OperatorOnlyAdmin):
    form = ClientForm
    list_display = ("client_id", "scopes", "provider", "is_active", "updated_at")
    list_filter = ("is_active",)
    search_fields = ("client_id",)

    def save_model(self, request, obj, form, change) -> None:
        # The form has validated through the same service check, so this registers or updates.
        client, _ = oauth.register_client(
            client_id=form.cleaned_data.get("client_id") or obj.client_id, jwks=form.cleaned_data["public_keys"],
            scopes=form.cleaned_data["scope_list"], provider=form.cleaned_data.get("provider"),
            actor=f"user:{request.user.get_username()}")
        if not form.cleaned_data.get("is_active", True):
            Client.objects.filter(pk=client.pk).update(is_active=False)
        obj.pk = client.pk

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # deactivate instead: the audit trail names clients


@admin.register(NodeKey)
class NodeKeyAdmin(ReadOnlyOperatorAdmin):
    # The encrypted private half is never shown.
    fields = ("kid", "purpose", "alg", "public_jwk", "created_at", "activates_at", "superseded_at", "unpublish_at")
    list_display = ("kid", "purpose", "alg", "activates_at", "superseded_at", "unpublish_at")
    list_filter = ("purpose",)


@admin.register(ProviderCredential)
class ProviderCredentialAdmin(ReadOnlyOperatorAdmin):
    fields = ("jti", "provider", "status", "issued_at", "expires_at", "status_list", "status_index", "revoke_after",
              "token")
    list_display = ("jti", "provider", "status", "issued_at", "expires_at")
    list_filter = ("status",)
    search_fields = ("=jti", "=provider__prefix")


@admin.register(StatusList)
class StatusListAdmin(ReadOnlyOperatorAdmin):
    fields = ("id", "bits", "size", "allocated", "version", "token_expires_at", "created_at")
    list_display = ("id", "allocated", "size", "version", "token_expires_at")
