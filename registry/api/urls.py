from django.urls import path

from . import views

urlpatterns = [
    path("resolve", views.BatchResolveView.as_view(), name="resolve-batch"),
    path("resolve/<path:ucri>", views.ResolveView.as_view(), name="resolve"),
    path("providers/<str:prefix>", views.ProviderView.as_view(), name="provider"),
    path("resources", views.ResourceListView.as_view(), name="resources"),
]
