from django.urls import path

from .api import views

urlpatterns = [
    path(".well-known/jwks.json", views.jwks, name="jwks"),
    path("oauth/token", views.token, name="oauth-token"),
    path("api/v1/status-lists/<str:list_id>", views.StatusListView.as_view(), name="status-list"),
    path("api/v1/providers/<str:prefix>/keys", views.ProviderKeysView.as_view(), name="provider-keys"),
]
