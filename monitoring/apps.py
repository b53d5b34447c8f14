from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from . import access

        access.allowed_networks()  # a malformed CIR_METRICS_ALLOW stops the process at start, not at a scrape
