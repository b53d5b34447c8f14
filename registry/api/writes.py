"""The provider write API (CONTRACT §9). Reads need ``resources:read``, writes ``resources:write``,
both only for the calling client's own provider; another provider's objects are 404."""

from __future__ import annotations

import uuid

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from core.errors import ApplicationError
from core.http import if_match_version, json_response
from core.idempotency import idempotent
from core.permissions import InsufficientScope

from .. import availability, error_codes, identifiers, records, selectors, services
from ..models import Availability, Downtime, Provider, Resource, Site
from .serializers import DowntimeInputSerializer, ResourceInputSerializer, SiteInputSerializer

READ_WRITE = {"GET": "resources:read", "HEAD": "resources:read", "PATCH": "resources:write",
              "POST": "resources:write", "DELETE": "resources:write"}
_object = OpenApiResponse(OpenApiTypes.OBJECT)


def own_provider(request: Request) -> Provider:
    provider_id = getattr(request.user, "provider_id", None)
    if provider_id is None:
        raise InsufficientScope("this client is not bound to a provider")
    return Provider.objects.get(pk=provider_id)


def parse(serializer_class, request: Request, *, partial: bool = False) -> dict:
    serializer = serializer_class(data=request.data, partial=partial)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _not_found(what: str) -> ApplicationError:
    return ApplicationError(error_codes.NOT_FOUND, f"no such {what}", status=404)


def own_resource(request: Request, ucri_text: str) -> Resource:
    try:
        ucri = identifiers.canonicalize(ucri_text)
    except identifiers.UCRIError as exc:
        raise ApplicationError(exc.code, str(exc), status=400) from exc
    resource = (Resource.objects.select_related("provider", "site")
                .filter(ucri=ucri, provider=own_provider(request)).first())
    if resource is None:
        raise _not_found("resource")
    return resource


def _own(model, request: Request, object_id: str, what: str):
    try:
        pk = uuid.UUID(object_id)
    except ValueError as exc:
        raise _not_found(what) from exc
    found = model.objects.select_related("provider").filter(pk=pk, provider=own_provider(request)).first()
    if found is None:
        raise _not_found(what)
    return found


def resource_body(resource: Resource) -> dict:
    resource = Resource.objects.select_related("provider", "site").get(pk=resource.pk)
    return selectors.records_for([resource])[0]


def site_body(site: Site) -> dict:
    body = records.site_public(site)
    body["provider"] = site.provider.prefix
    return body


def _precondition(request: Request, current_body: dict) -> None:
    if not if_match_version(request, current_body):
        raise ApplicationError(error_codes.PRECONDITION_FAILED, "If-Match does not name the current version",
                               status=412)


class ResourceDetailView(APIView):
    required_scopes = READ_WRITE

    @extend_schema(operation_id="resource_read", responses={200: _object, 404: _object})
    def get(self, request: Request, ucri: str) -> HttpResponse:
        return json_response(request, resource_body(own_resource(request, ucri)), etag=True)

    @extend_schema(operation_id="resource_update", request=ResourceInputSerializer(partial=True),
                   responses={200: _object, 400: _object, 404: _object, 409: _object, 412: _object})
    def patch(self, request: Request, ucri: str) -> HttpResponse:
        resource = own_resource(request, ucri)
        data = parse(ResourceInputSerializer, request, partial=True)
        current = resource_body(resource)
        _precondition(request, current)
        if resource.is_retired:
            raise ApplicationError(error_codes.RESOURCE_RETIRED, f"{resource.ucri} is retired", status=409)
        resource = services.resource_update(resource=resource, data=data,
                                            expected_version=current["version"] if "If-Match" in request.headers
                                            else None)
        return json_response(request, resource_body(resource), etag=True)


class ResourceRetireView(APIView):
    required_scopes = READ_WRITE

    @extend_schema(operation_id="resource_retire", request=None, responses={200: _object, 404: _object})
    def post(self, request: Request, ucri: str) -> HttpResponse:
        resource = services.resource_retire(resource=own_resource(request, ucri))
        return json_response(request, resource_body(resource), etag=True)


class SiteCollectionView(APIView):
    required_scopes = READ_WRITE

    @extend_schema(operation_id="site_create", request=SiteInputSerializer, responses={201: _object, 400: _object})
    @idempotent
    def post(self, request: Request) -> HttpResponse:
        site = services.site_create(provider=own_provider(request), data=parse(SiteInputSerializer, request))
        return json_response(request, site_body(site), status=201, etag=True,
                             headers={"Location": f"/api/v1/sites/{site.id}"})


class SiteDetailView(APIView):
    required_scopes = READ_WRITE

    @extend_schema(operation_id="site_read", responses={200: _object, 404: _object})
    def get(self, request: Request, site_id: str) -> HttpResponse:
        return json_response(request, site_body(_own(Site, request, site_id, "site")), etag=True)

    @extend_schema(operation_id="site_update", request=SiteInputSerializer(partial=True),
                   responses={200: _object, 400: _object, 404: _object, 412: _object})
    def patch(self, request: Request, site_id: str) -> HttpResponse:
        site = _own(Site, request, site_id, "site")
        data = parse(SiteInputSerializer, request, partial=True)
        _precondition(request, site_body(site))
        site = services.site_update(site=site, data=data,
                                    expected_version=site.version if "If-Match" in request.headers else None)
        return json_response(request, site_body(site), etag=True)


class DowntimeCollectionView(APIView):
    required_scopes = READ_WRITE

    @extend_schema(operation_id="downtime_create", request=DowntimeInputSerializer,
                   responses={201: _object, 400: _object})
    @idempotent
    def post(self, request: Request) -> HttpResponse:
        downtime = services.downtime_create(provider=own_provider(request),
                                            data=parse(DowntimeInputSerializer, request))
        return json_response(request, records.downtime_public(downtime), status=201, etag=True,
                             headers={"Location": f"/api/v1/downtimes/{downtime.id}"})


class DowntimeDetailView(APIView):
    required_scopes = READ_WRITE

    @extend_schema(operation_id="downtime_read", responses={200: _object, 404: _object})
    def get(self, request: Request, downtime_id: str) -> HttpResponse:
        return json_response(request, records.downtime_public(_own(Downtime, request, downtime_id, "downtime")),
                             etag=True)

    @extend_schema(operation_id="downtime_delete", request=None, responses={204: None, 404: _object})
    def delete(self, request: Request, downtime_id: str) -> HttpResponse:
        services.downtime_delete(downtime=_own(Downtime, request, downtime_id, "downtime"))
        return HttpResponse(status=204)


class AvailabilityReportView(APIView):
    required_scopes = "resources:write"

    @extend_schema(operation_id="availability_report", request=OpenApiTypes.OBJECT,
                   responses={202: _object, 400: _object, 404: _object})
    def post(self, request: Request) -> HttpResponse:
        body = request.data
        if not isinstance(body, dict) or set(body) != {"reports"}:
            raise ApplicationError(error_codes.INVALID_REQUEST, 'the body is {"reports": [...]}')
        accepted = availability.report(provider=own_provider(request), reports=body["reports"])
        return json_response(request, {"accepted": accepted}, status=202)


class ResourceAvailabilityView(APIView):
    required_scopes = "resources:read"

    @extend_schema(operation_id="resource_availability", responses={200: _object, 404: _object})
    def get(self, request: Request, ucri: str) -> HttpResponse:
        try:
            canonical = identifiers.canonicalize(ucri)
        except identifiers.UCRIError as exc:
            raise ApplicationError(exc.code, str(exc), status=400) from exc
        resource = Resource.objects.filter(ucri=canonical).only("pk").first()
        if resource is None:
            raise ApplicationError("ucri_unknown", f"no resource is registered as {canonical}", status=404)
        held = Availability.objects.filter(pk=resource.pk).first()
        if held is None:
            raise ApplicationError("no_report", f"no availability has been reported for {canonical}", status=404)
        return json_response(request, availability.public(held), etag=True)
