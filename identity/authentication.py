"""DRF authentication by ``Authorization: Bearer <at+jwt>`` (CONTRACT §6)."""

from __future__ import annotations

from rest_framework import authentication, exceptions

from . import oauth, tokens


class AccessTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("use Authorization: Bearer <access token>")
        try:
            principal = oauth.authenticate_access_token(token.strip())
        except tokens.TokenError as exc:
            raise exceptions.AuthenticationFailed(f"invalid access token: {exc}") from exc
        return principal, token.strip()

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="cir"'
