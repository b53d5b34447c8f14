"""Scope checks for token-protected routes (CONTRACT §2, §6).

Views declare ``required_scopes``: a scope, or a mapping of HTTP method to scope. The authenticated
principal (``request.user``) must offer ``has_scope``; the identity app provides it.
"""

from __future__ import annotations

from rest_framework import exceptions
from rest_framework.permissions import BasePermission


class InsufficientScope(exceptions.PermissionDenied):
    default_detail = "The access token lacks the scope this route needs."


def required_scope(view, method: str) -> str | None:
    scopes = getattr(view, "required_scopes", None)
    if scopes is None or isinstance(scopes, str):
        return scopes
    return scopes.get(method, scopes.get("*"))


class HasScope(BasePermission):
    def has_permission(self, request, view) -> bool:
        scope = required_scope(view, request.method)
        if scope is None:
            return True
        principal = request.user
        if principal is None or not getattr(principal, "is_authenticated", False):
            raise exceptions.NotAuthenticated()
        if not principal.has_scope(scope):
            raise InsufficientScope(f"this route needs the scope {scope}")
        return True
