from django.urls import path

from . import views, writes

urlpatterns = [
    path("resolve", views.BatchResolveView.as_view(), name="resolve-batch"),
    path("resolve/<path:ucri>", views.ResolveView.as_view(), name="resolve"),
    path("providers/<str:prefix>", views.ProviderView.as_view(), name="provider"),
    path("resources", views.ResourceListView.as_view(), name="resources"),
    # Sub-routes first: a UCRI contains "/", so <path:ucri> would otherwise swallow them.
    path("resources/<path:ucri>/retire", writes.ResourceRetireView.as_view(), name="resource-retire"),
    path("resources/<path:ucri>/availability", writes.ResourceAvailabilityView.as_view(),
         name="resource-availability"),
    path("resources/<path:ucri>", writes.ResourceDetailView.as_view(), name="resource"),
    path("sites", writes.SiteCollectionView.as_view(), name="sites"),
    path("sites/<str:site_id>", writes.SiteDetailView.as_view(), name="site"),
    path("downtimes", writes.DowntimeCollectionView.as_view(), name="downtimes"),
    path("availability", writes.AvailabilityReportView.as_view(), name="availability"),
    path("downtimes/<str:downtime_id>", writes.DowntimeDetailView.as_view(), name="downtime"),
]
