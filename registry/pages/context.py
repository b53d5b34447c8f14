"""Who may see which page (CONTRACT §14 roles)."""

from __future__ import annotations

from registry import selectors


def can_explore(user) -> bool:
    """Operators and provider staff (CONTRACT §14) browse the catalog as discovery shows it."""
    return bool(user and user.is_authenticated and user.is_active and (
        user.is_superuser or selectors.is_operator(user) or selectors.provider_of_user(user) is not None))


def can_watch_federation(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (
        user.is_superuser or selectors.is_operator(user)))
