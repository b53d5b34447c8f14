from django.urls import path

from . import dashboard, explorer, resolver

urlpatterns = [
    path("", resolver.home, name="home"),
    path("r/<path:ucri>", resolver.resolve_page, name="resolve-page"),
    path("dashboard", dashboard.dashboard_page, name="dashboard"),
    path("explorer", explorer.explorer_page, name="explorer"),
    path("explorer/export.csv", explorer.explorer_csv, name="explorer-csv"),
]
