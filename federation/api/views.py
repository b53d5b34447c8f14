"""Federation endpoints (CONTRACT §8). Errors use the OpenID Federation form (``error``,
``error_description``), not problem details."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.views import APIView

from core.errors import ApplicationError
from core.throttling import ResolveRateThrottle
from identity import keys
from identity.models import Purpose
from registry import availability
from registry.services import this_node

from .. import chains, checkpoints, clients, entity, feed, trust
from ..models import Peer

_OIDF_CODES = {401: "invalid_token", 403: "insufficient_scope", 404: "not_found", 405: "invalid_request",
               429: "temporarily_unavailable", 503: "temporarily_unavailable"}


def oidf_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse({"error": error, "error_description": description}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _oidf_exception_handler(exc, context):
    if isinstance(exc, ApplicationError):
        return oidf_error(exc.status, "invalid_request" if exc.status == 400 else _OIDF_CODES.get(exc.status, exc.code),
                          exc.detail)
    if isinstance(exc, exceptions.APIException):
        status = exc.status_code
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            status = 401
            headers["WWW-Authenticate"] = 'Bearer realm="cir"'
        return oidf_error(status, _OIDF_CODES.get(status, "invalid_request"), str(exc.detail), headers)
    return None


class FederationView(APIView):
    def get_exception_handler(self):
        return _oidf_exception_handler


class PublicFederationView(FederationView):
    authentication_classes: list = []


def _jwt_response(token: str, media_type: str) -> HttpResponse:
    return HttpResponse(token, content_type=f"application/{media_type}")


def _single(request, name: str, *, required: bool = True) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ApplicationError("invalid_request", f"{name} is repeated")
    if not values:
        if required:
            raise ApplicationError("invalid_request", f"{name} is required")
        return None
    if not values[0]:
        raise ApplicationError("invalid_request", f"{name} is empty")
    return values[0]


class EntityConfigurationView(PublicFederationView):
    @extend_schema(operation_id="entity_configuration", responses={200: OpenApiTypes.STR})
    def get(self, request):
        return _jwt_response(entity.configuration(), "entity-statement+jwt")


class FetchView(PublicFederationView):
    @extend_schema(operation_id="federation_fetch", parameters=[OpenApiParameter("sub", str, required=True)],
                   responses={200: OpenApiTypes.STR})
    def get(self, request):
        sub = _single(request, "sub")
        if set(request.query_params) - {"sub"}:
            return oidf_error(400, "unsupported_parameter", "only sub is supported")
        peer = Peer.objects.filter(entity_id=sub.rstrip("/"), relation=Peer.Relation.SUBORDINATE).first()
        if peer is None:
            return oidf_error(404, "not_found", f"{sub} is not a subordinate of this entity")
        return _jwt_response(entity.subordinate_statement(peer), "entity-statement+jwt")


class ListView(PublicFederationView):
    @extend_schema(operation_id="federation_list", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        if set(request.query_params) - {"entity_type"}:
            return oidf_error(400, "unsupported_parameter", "only entity_type is supported")
        subordinates = Peer.objects.filter(relation=Peer.Relation.SUBORDINATE).order_by("entity_id")
        return JsonResponse([p.entity_id for p in subordinates], safe=False)


class ResolveView(PublicFederationView):
    """OpenID Federation resolve: the subject's metadata after policy, and the chain that proves it."""

    throttle_classes = [ResolveRateThrottle]

    @extend_schema(operation_id="federation_resolve", parameters=[OpenApiParameter("sub", str, required=True),
                                                                  OpenApiParameter("trust_anchor", str, required=True)],
                   responses={200: OpenApiTypes.STR})
    def get(self, request):
        if set(request.query_params) - {"sub", "trust_anchor", "entity_type"}:
            return oidf_error(400, "unsupported_parameter", "supported: sub, trust_anchor, entity_type")
        sub, anchor = _single(request, "sub"), _single(request, "trust_anchor")
        if anchor.rstrip("/") not in chains.anchors():
            return oidf_error(404, "invalid_trust_anchor", f"{anchor} is not a trust anchor this entity uses")
        # Only entities this node knows (itself, its peers and the authorities of records it holds):
        # an open resolver would fetch any URL it is given.
        if not _known_entity(sub.rstrip("/")):
            return oidf_error(404, "not_found", f"{sub} is not an entity this node knows")
        try:
            statements, pinned = chains.collect(sub.rstrip("/"))
            chain = trust.validate_chain(statements, anchors={anchor.rstrip("/"): pinned[anchor.rstrip("/")]})
        except (chains.ChainError, trust.TrustChainError, clients.PeerError) as exc:
            return oidf_error(404, "invalid_trust_chain", str(exc))
        now = int(timezone.now().timestamp())
        claims = {"iss": this_node().entity_id, "sub": chain.subject, "iat": now, "exp": int(chain.expires_at),
                  "metadata": chain.metadata, "trust_chain": statements}
        token = keys.sign(Purpose.FEDERATION, claims, typ="resolve-response+jwt").token
        return _jwt_response(token, "resolve-response+jwt")


def _known_entity(entity_id: str) -> bool:
    from registry.models import Platform, Provider

    return (entity_id == this_node().entity_id or Peer.objects.filter(entity_id=entity_id).exists()
            or Platform.objects.filter(entity_id=entity_id).exists()
            or Provider.objects.filter(authority=entity_id).exists())


class SignedJwksView(PublicFederationView):
    @extend_schema(operation_id="signed_jwks", responses={200: OpenApiTypes.STR})
    def get(self, request):
        response = _jwt_response(entity.signed_jwks(), "jwk-set+jwt")
        response["Cache-Control"] = f"public, max-age={settings.CIR_JWKS_MAX_AGE}"
        return response


class ChangeFeedView(FederationView):
    required_scopes = "federation:sync"

    @extend_schema(operation_id="change_feed", parameters=[OpenApiParameter("after", int),
                                                           OpenApiParameter("limit", int)],
                   responses={200: OpenApiTypes.STR})
    def get(self, request):
        if set(request.query_params) - {"after", "limit"}:
            return oidf_error(400, "unsupported_parameter", "only after and limit are supported")
        raw_after = _single(request, "after", required=False) or "0"
        raw_limit = _single(request, "limit", required=False) or "100"
        if not (raw_after.isascii() and raw_after.isdigit() and raw_limit.isascii() and raw_limit.isdigit()):
            return oidf_error(400, "invalid_request", "after and limit are non-negative integers")
        after, limit = int(raw_after), int(raw_limit)
        if after >= 2**63 or not 1 <= limit <= feed.MAX_LIMIT:
            return oidf_error(400, "invalid_request", f"after >= 0 and 1 <= limit <= {feed.MAX_LIMIT}")
        # This page reaches the end of the feed, and the consumer has read every availability entry
        # published so far: add the newest report per resource now. One publish per pull, so a busy
        # feed still ends (one entry per resource per pull).
        if after + limit >= feed.head() and after >= feed.availability_mark() and availability.publish_pending():
            feed.set_availability_mark(feed.head())
        return _jwt_response(feed.signed_page(after, limit), "change-page+jwt")


class NotifyView(FederationView):
    required_scopes = "federation:notify"

    @extend_schema(operation_id="federation_notify", request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    def post(self, request):
        from .. import sync

        body = request.data
        seq = body.get("seq") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) != {"seq"} or isinstance(seq, bool) or not isinstance(seq, int) \
                or not 0 <= seq < 2**63:
            return oidf_error(400, "invalid_request", 'the body is {"seq": <non-negative integer>}')
        peer = Peer.objects.filter(entity_id=request.user.client_id, relation=Peer.Relation.SUBORDINATE).first()
        if peer is None:
            return oidf_error(403, "insufficient_scope", "only a subordinate may notify")
        sync.request_pull(peer, seq)
        return JsonResponse({"accepted": True}, status=202)


class AuditCheckpointView(PublicFederationView):
    """The latest stored audit checkpoint (CONTRACT §8): the same token until the audit head advances and
    the beat task signs a new one."""

    @extend_schema(operation_id="audit_checkpoint_latest", responses={200: OpenApiTypes.STR})
    def get(self, request):
        checkpoint = checkpoints.latest_or_sign()
        if checkpoint is None:
            return oidf_error(503, "temporarily_unavailable", "no audit checkpoint yet", {"Retry-After": "30"})
        return _jwt_response(checkpoint.token, checkpoints.TYP)
