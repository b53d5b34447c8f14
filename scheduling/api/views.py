"""Handoff endpoints (CONTRACT §7): thin, each calls one service."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.views import APIView

from core.errors import ApplicationError
from core.http import json_response
from core.idempotency import idempotent

from .. import services
from ..models import Handoff

_object = OpenApiResponse(OpenApiTypes.OBJECT)


class HandoffCollectionView(APIView):
    required_scopes = {"POST": "handoff:request"}

    @extend_schema(operation_id="handoff_request", summary="Request a DPoP-bound handoff ticket",
                   parameters=[OpenApiParameter("DPoP", str, OpenApiParameter.HEADER, required=True)],
                   request=OpenApiTypes.OBJECT, responses={201: _object, 400: _object, 403: _object, 409: _object})
    def post(self, request: Request) -> HttpResponse:
        if not request.headers.get("DPoP"):  # before any idempotent replay: a replay needs a proof too
            raise ApplicationError("dpop_required", "send a DPoP proof in the DPoP header (RFC 9449)")
        return self._issue(request)

    @idempotent
    def _issue(self, request: Request) -> HttpResponse:
        handoff, ticket = services.request_handoff(
            client_id=request.user.client_id, body=request.data, access_token=request.auth,
            proof=request.headers.get("DPoP"), method=request.method,
            url=request.build_absolute_uri(request.path))
        body = {"id": str(handoff.id), "ticket": ticket, "provider_endpoint": handoff.endpoint,
                "expires_at": services.public(handoff)["expires_at"], "status": Handoff.Status.ISSUED}
        return json_response(request, body, status=201, headers={"Location": f"/api/v1/handoffs/{handoff.id}"})


class HandoffDetailView(APIView):
    @extend_schema(operation_id="handoff_read", responses={200: _object, 404: _object})
    def get(self, request: Request, handoff_id: str) -> HttpResponse:
        principal = request.user
        if principal is None:
            raise exceptions.NotAuthenticated()
        if not {"handoff:request", "handoff:ack"} & principal.scopes:
            # Anyone but the two parties gets 404, as if the handoff did not exist (CONTRACT §7).
            raise ApplicationError("not_found", "no such handoff", status=404)
        handoff = services.visible(handoff_id, client_id=principal.client_id, scopes=principal.scopes,
                                   provider_id=principal.provider_id)
        return json_response(request, services.public(handoff), etag=True)


class HandoffAckView(APIView):
    required_scopes = "handoff:ack"

    @extend_schema(operation_id="handoff_ack", request=OpenApiTypes.OBJECT,
                   responses={200: _object, 404: _object, 409: _object})
    def post(self, request: Request, handoff_id: str) -> HttpResponse:
        handoff = services.acknowledge(handoff_id, provider_id=request.user.provider_id,
                                       client_id=request.user.client_id, body=request.data)
        return json_response(request, services.public(handoff))
