"""Resolution (CONTRACT §3), provider records and discovery (§4). Thin: parse, call a selector, render."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.views import APIView

from core.errors import ApplicationError
from core.http import PROBLEM_JSON, json_response
from core.idempotency import idempotent
from core.pagination import envelope, next_url, paginate, parse_limit
from core.throttling import ResolveRateThrottle

from .. import availability, error_codes, filters, records, selectors, services
from . import writes
from .serializers import ResourceInputSerializer

MAX_BATCH = 1000

_record = OpenApiResponse(OpenApiTypes.OBJECT, description="The resource record (CONTRACT §3)")
_problem = OpenApiResponse(OpenApiTypes.OBJECT, description="RFC 9457 problem details with a `code`")


def _resolution_response(request, resolution: selectors.Resolution) -> HttpResponse:
    headers = {}
    location = resolution.body.get("location")
    if location:
        headers["Location"] = location
    if resolution.is_record:
        return json_response(request, resolution.body, etag=True)
    # A tombstone carries an ETag by the same rule (CONTRACT §3); other problems have none.
    return json_response(request, resolution.body, status=resolution.status, content_type=PROBLEM_JSON,
                         etag="record" in resolution.body, headers=headers)


class ResolveView(APIView):
    authentication_classes: list = []  # public: a stray Authorization header is ignored
    throttle_classes = [ResolveRateThrottle]

    @extend_schema(
        operation_id="resolve_ucri",
        summary="Resolve a UCRI to its record",
        responses={200: _record, 304: None, 400: _problem, 404: _problem, 410: _problem, 429: _problem},
    )
    def get(self, request: Request, ucri: str) -> HttpResponse:
        return _resolution_response(request, selectors.resolve(ucri))


class BatchResolveView(APIView):
    authentication_classes: list = []  # public: a stray Authorization header is ignored
    throttle_classes = [ResolveRateThrottle]

    @extend_schema(
        operation_id="resolve_batch",
        summary="Resolve up to 1000 UCRIs",
        request=inline_serializer("BatchResolveRequest", {"ucris": serializers.ListField(
            child=serializers.CharField(), max_length=MAX_BATCH)}),
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description='{"results": {input: record or problem}}'),
                   400: _problem},
    )
    def post(self, request: Request) -> HttpResponse:
        body = request.data
        ucris = body.get("ucris") if isinstance(body, dict) else None
        if set(body if isinstance(body, dict) else {}) - {"ucris"}:
            raise ApplicationError(error_codes.INVALID_REQUEST, "the body has only the member 'ucris'")
        if not isinstance(ucris, list) or not all(isinstance(u, str) for u in ucris):
            raise ApplicationError(error_codes.INVALID_REQUEST, "'ucris' must be a list of strings")
        if len(ucris) > MAX_BATCH:
            raise ApplicationError(error_codes.BATCH_TOO_LARGE, f"at most {MAX_BATCH} UCRIs per request")
        answers = selectors.resolve_many(ucris)
        return json_response(request, {"results": {text: a.body for text, a in answers.items()}})


class ProviderView(APIView):
    authentication_classes: list = []  # public: a stray Authorization header is ignored
    throttle_classes = [ResolveRateThrottle]
    @extend_schema(operation_id="provider_record", summary="Public record of a provider",
                   responses={200: OpenApiTypes.OBJECT, 400: _problem, 404: _problem})
    def get(self, request: Request, prefix: str) -> HttpResponse:
        provider = selectors.provider_by_prefix(prefix)
        return json_response(request, records.provider_public(provider), etag=True)


def _discovery_parameters() -> list[OpenApiParameter]:
    described = []
    for name, flt in filters.ResourceFilterSet.base_filters.items():
        choices = getattr(flt.extra, "get", lambda _k: None)("choices")
        enum = [c[0] for c in choices] if isinstance(choices, list) else None
        described.append(OpenApiParameter(name, str, enum=enum, required=False))
    described.append(OpenApiParameter("cursor", str, required=False))
    described.append(OpenApiParameter("limit", int, required=False, description="1..500, default 50"))
    return described


class ResourceListView(APIView):
    required_scopes = {"GET": "resources:read", "POST": "resources:write"}

    @extend_schema(
        operation_id="discover_resources",
        summary="Search the federated catalog",
        parameters=_discovery_parameters(),
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description='{"results": [record], "next": URL}'),
                   400: _problem},
    )
    def get(self, request: Request) -> HttpResponse:
        queryset, ordering, values = filters.discover(request.query_params)
        queryset = selectors.public_page(queryset, (k.field for k in ordering.keys))
        page = paginate(queryset, ordering, cursor=values.get("cursor"), limit=parse_limit(values.get("limit")))
        items = selectors.records_for(page.items)
        for resource, item in zip(page.items, items, strict=True):
            item["availability"] = availability.public(selectors.held_availability(resource))
        return json_response(request, envelope(items, next_url(request, page.next_cursor)))

    @extend_schema(operation_id="resource_create", summary="Register a resource (mints its UCRI)",
                   request=ResourceInputSerializer, responses={201: _record, 400: _problem, 409: _problem})
    @idempotent
    def post(self, request: Request) -> HttpResponse:
        provider = writes.own_provider(request)
        resource = services.resource_create(provider=provider, data=writes.parse(ResourceInputSerializer, request))
        return json_response(request, writes.resource_body(resource), status=201, etag=True,
                             headers={"Location": f"/api/v1/resources/{resource.ucri}"})
