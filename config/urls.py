from django.contrib import admin
from django.http import HttpResponsePermanentRedirect
from django.templatetags.static import static
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from federation import pages as federation_pages

handler400 = "core.problems.api_bad_request"
handler404 = "core.problems.api_not_found"
handler500 = "core.problems.api_server_error"

urlpatterns = [
    # First: resolution and discovery are the busiest routes, and Django tries patterns in order (no other
    # pattern matches these paths; identity's and federation's api/v1/ routes are not among them).
    path("api/v1/", include("registry.api.urls")),
    path("", include("registry.pages.urls")),
    path("federation-status", federation_pages.federation_status_page, name="federation-status"),
    path("i18n/", include("django.conf.urls.i18n")),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin's); answer instead of a 404.
    path("favicon.ico", lambda request: HttpResponsePermanentRedirect(static("cir/favicon.svg"))),
    path("", include("identity.urls")),
    path("", include("federation.urls")),
    path("api/v1/", include("scheduling.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
    path("", include("monitoring.urls")),
]
