"""Labels the pages share."""

from __future__ import annotations

from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

STATUS_LABELS = {"active": _("Active"), "suspended": _("Suspended"), "retired": _("Retired")}


def is_chinese() -> bool:
    """Whether the page is being rendered in Chinese (``zh-hans``): reference names have two languages."""
    return (get_language() or "").lower().startswith("zh")
