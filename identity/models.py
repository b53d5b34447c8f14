"""Keys, clients, provider credentials and status lists."""

from __future__ import annotations

import uuid

from django.db import models

from core.models import TimeStampedModel
from registry.models import Provider


class Purpose(models.TextChoices):
    ACCESS_TOKEN = "access_token"
    CREDENTIAL = "credential"
    HANDOFF = "handoff"
    FEDERATION = "federation"


class NodeKey(models.Model):
    """A signing key of this node. The private half is Fernet-encrypted and never leaves ``identity``.

    Life cycle (CONTRACT §5): published from ``created_at``; used for signing from ``activates_at``
    (at least one JWKS refresh interval later, except a node's very first key); superseded when a newer
    key activates; unpublished once every token it signed has expired (``superseded_at`` + lifetime).
    """

    kid = models.CharField(max_length=64, primary_key=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    alg = models.CharField(max_length=8)
    public_jwk = models.JSONField()
    private_key_encrypted = models.BinaryField(editable=False)
    created_at = models.DateTimeField()
    activates_at = models.DateTimeField()
    superseded_at = models.DateTimeField(null=True, blank=True)
    unpublish_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["purpose", "-activates_at"]
        indexes = [models.Index(fields=["purpose", "activates_at"], name="nodekey_purpose_active")]

    def __str__(self) -> str:
        return f"{self.purpose} {self.alg} {self.kid[:12]}…"


class Client(TimeStampedModel):
    """A registered OAuth client (scheduler, provider automation): keys, no shared secrets."""

    client_id = models.CharField(max_length=255, unique=True)
    jwks = models.JSONField(help_text="The client's public keys (JWK objects).")
    scopes = models.CharField(max_length=500, help_text="Space-separated scopes the client may get.")
    provider = models.ForeignKey(Provider, null=True, blank=True, on_delete=models.CASCADE, related_name="clients",
                                 help_text="Binds provider automation to one provider (required for resources:write).")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["client_id"]

    def __str__(self) -> str:
        return self.client_id

    @property
    def scope_set(self) -> set[str]:
        return set(self.scopes.split())


class ProviderKey(models.Model):
    """A provider's public key; credentials bind to it with ``cnf.jwk``."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="keys")
    kid = models.CharField(max_length=64)
    jwk = models.JSONField()
    registered_at = models.DateTimeField(auto_now_add=True)
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["provider", "-registered_at"]
        constraints = [models.UniqueConstraint(fields=["provider", "kid"], name="provider_key_once")]

    def __str__(self) -> str:
        return f"{self.provider.prefix} key {self.kid[:12]}…"


class StatusList(models.Model):
    """An IETF Token Status List (2 bits per entry) of provider credentials."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    bits = models.PositiveSmallIntegerField(default=2)
    size = models.PositiveIntegerField(default=16384)
    statuses = models.BinaryField()  # one byte per entry here; packed only when signed
    allocated = models.PositiveIntegerField(default=0)
    version = models.PositiveIntegerField(default=1)
    token = models.TextField(blank=True, editable=False)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    token_version = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"status list {self.id} ({self.allocated}/{self.size})"


class CredentialStatus(models.TextChoices):
    VALID = "valid"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    EXPIRED = "expired"


class ProviderCredential(models.Model):
    """A signed provider credential (``provider-credential+jwt``)."""

    jti = models.CharField(max_length=64, primary_key=True)
    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="credentials")
    key = models.ForeignKey(ProviderKey, on_delete=models.PROTECT, related_name="credentials")
    token = models.TextField()
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    status_list = models.ForeignKey(StatusList, on_delete=models.PROTECT, related_name="credentials")
    status_index = models.PositiveIntegerField()
    # valid | suspended | revoked (expiry is the credential's own exp, not a status)
    status = models.CharField(max_length=16, default=CredentialStatus.VALID)
    revoke_after = models.DateTimeField(null=True, blank=True, help_text="End of a key-rotation overlap.")
    replaced_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["provider", "-issued_at"]
        constraints = [
            models.UniqueConstraint(fields=["status_list", "status_index"], name="status_index_once"),
        ]

    def __str__(self) -> str:
        return f"credential {self.jti[:8]}… of {self.provider.prefix} ({self.status})"


class SeenJti(models.Model):
    """A single-use ``jti`` this node has accepted (client assertions, DPoP proofs; CONTRACT §5), kept
    until the token could no longer verify. Used when the shared cache is the database (the default);
    with ``CIR_CACHE_URL=redis://...`` the cache holds them instead (``identity.replay``)."""

    digest = models.CharField(max_length=64, primary_key=True, help_text="SHA-256 of the token kind and jti.")
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"jti {self.digest[:12]}… until {self.expires_at:%Y-%m-%d %H:%M:%S}"
