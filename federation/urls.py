from django.urls import path

from .api import views

urlpatterns = [
    path(".well-known/openid-federation", views.EntityConfigurationView.as_view(), name="entity-configuration"),
    path(".well-known/signed-jwks", views.SignedJwksView.as_view(), name="signed-jwks"),
    path("federation/fetch", views.FetchView.as_view(), name="federation-fetch"),
    path("federation/list", views.ListView.as_view(), name="federation-list"),
    path("federation/resolve", views.ResolveView.as_view(), name="federation-resolve"),
    path("federation/changes", views.ChangeFeedView.as_view(), name="change-feed"),
    path("federation/notify", views.NotifyView.as_view(), name="federation-notify"),
    path("api/v1/audit/checkpoints/latest", views.AuditCheckpointView.as_view(), name="audit-checkpoint"),
]
