from django.contrib import admin

from registry.admin import ReadOnlyOperatorAdmin

from .models import Handoff


@admin.register(Handoff)
class HandoffAdmin(ReadOnlyOperatorAdmin):
    list_display = ("id", "ucri", "scheduler", "status", "issued_at", "expires_at", "acknowledged_at")
    list_filter = ("status",)
    search_fields = ("=id", "=ucri", "scheduler", "provider_prefix")
    readonly_fields = [f.name for f in Handoff._meta.fields]
