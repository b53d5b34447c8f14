"""What every page's navigation needs to know about the person looking at it."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from registry import selectors


def can_explore(user) -> bool:
    """Operators and provider staff (CONTRACT §14) browse the catalog as discovery shows it."""
    return bool(user and user.is_authenticated and user.is_active and (
        user.is_superuser or selectors.is_operator(user) or selectors.provider_of_user(user) is not None))


def can_watch_federation(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (
        user.is_superuser or selectors.is_operator(user)))


def navigation(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    return {"nav_can_explore": can_explore(user), "nav_can_watch_federation": can_watch_federation(user)}
