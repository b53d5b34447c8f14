from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from registry import views as registry_views

handler400 = "core.problems.api_bad_request"
handler404 = "core.problems.api_not_found"
handler500 = "core.problems.api_server_error"

urlpatterns = [
    path("", registry_views.home, name="home"),
    path("r/<path:ucri>", registry_views.resolve_page, name="resolve-page"),
    path("", include("identity.urls")),
    path("", include("federation.urls")),
    path("api/v1/", include("registry.api.urls")),
    path("api/v1/", include("scheduling.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("admin/", admin.site.urls),
]
