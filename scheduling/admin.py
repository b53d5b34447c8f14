from django.contrib import admin

from registry.admin import OperatorOnlyAdmin

from .models import Handoff


@admin.register(Handoff)
class HandoffAdmin(OperatorOnlyAdmin):
    list_display = ("id", "ucri", "scheduler", "status", "issued_at", "expires_at", "acknowledged_at")
    list_filter = ("status",)
    search_fields = ("=id", "=ucri", "scheduler", "provider_prefix")
    readonly_fields = [f.name for f in Handoff._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
