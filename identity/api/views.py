"""JWKS, the OAuth token endpoint, status lists and provider key rotation (CONTRACT §5, §6)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.views import APIView

from core.errors import ApplicationError
from core.http import json_response
from core.idempotency import idempotent
from registry import records, selectors

from .. import credentials, keys, oauth, statuslists
from ..models import StatusList


def jwks(request: HttpRequest) -> HttpResponse:
    """``GET /.well-known/jwks.json``: the node's API keys with ``cir_use``; max-age = refresh interval."""
    response = JsonResponse({"keys": keys.public_jwks()})
    response["Cache-Control"] = f"public, max-age={settings.CIR_JWKS_MAX_AGE}"
    return response


@csrf_exempt
def token(request: HttpRequest) -> HttpResponse:
    """``POST /oauth/token``: RFC 6749 errors, never problem details."""
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if request.method != "POST":
        response = JsonResponse({"error": "invalid_request", "error_description": "use POST"}, status=405)
        response["Allow"] = "POST"
        return response
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    try:
        if content_type != "application/x-www-form-urlencoded":
            raise oauth.OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
        for name in ("grant_type", "client_assertion_type", "client_assertion", "scope", "client_id"):
            if len(request.POST.getlist(name)) > 1:
                raise oauth.OAuthError("invalid_request", f"{name} is repeated")
        body = oauth.issue_token(request.POST)
    except oauth.OAuthError as exc:
        response = JsonResponse({"error": exc.error, "error_description": exc.description}, status=exc.status)
        if exc.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="cir"'
    else:
        response = JsonResponse(body)
    for name, value in headers.items():
        response[name] = value
    return response


class StatusListView(APIView):
    authentication_classes: list = []

    @extend_schema(operation_id="status_list", summary="A signed status list (application/statuslist+jwt)",
                   responses={200: OpenApiResponse(OpenApiTypes.STR), 404: OpenApiTypes.OBJECT})
    def get(self, request, list_id: str) -> HttpResponse:
        try:
            status_list = StatusList.objects.get(pk=uuid.UUID(list_id))
        except (ValueError, StatusList.DoesNotExist) as exc:
            raise ApplicationError("not_found", "no such status list", status=404) from exc
        response = HttpResponse(statuslists.current_token(status_list), content_type="application/statuslist+jwt")
        response["Cache-Control"] = f"max-age={settings.CIR_STATUS_LIST_TTL}"
        return response


class ProviderKeysView(APIView):
    """``POST /api/v1/providers/{prefix}/keys``: the provider itself rotates its key at its home node."""

    required_scopes = "resources:write"

    @extend_schema(operation_id="provider_key_rotate", summary="Register a new provider key",
                   request=inline_serializer("ProviderKeyRequest", {"jwk": serializers.DictField()}),
                   responses={201: OpenApiTypes.OBJECT, 400: OpenApiTypes.OBJECT, 404: OpenApiTypes.OBJECT})
    @idempotent
    def post(self, request, prefix: str) -> HttpResponse:
        provider = selectors.provider_by_prefix(prefix)
        # Only the provider authenticated as itself (client_id = its prefix), never a bound client of
        # another provider; anyone else learns nothing (404).
        if request.user.client_id != provider.prefix or request.user.provider_id != provider.pk:
            raise ApplicationError("not_found", f"no provider holds the prefix {provider.prefix}", status=404)
        body = request.data
        if not isinstance(body, dict) or set(body) != {"jwk"}:
            raise ApplicationError("invalid_request", 'the body is {"jwk": {...}}', status=400)
        credentials.rotate_key(provider=provider, jwk=body["jwk"], actor=f"client:{request.user.client_id}")
        provider.refresh_from_db()
        return json_response(request, records.provider_public(provider), status=201)
