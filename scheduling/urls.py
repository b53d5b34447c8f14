from django.urls import path

from .api import views

urlpatterns = [
    path("handoffs", views.HandoffCollectionView.as_view(), name="handoffs"),
    path("handoffs/<str:handoff_id>", views.HandoffDetailView.as_view(), name="handoff"),
    path("handoffs/<str:handoff_id>/ack", views.HandoffAckView.as_view(), name="handoff-ack"),
]
