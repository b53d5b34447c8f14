"""Browser-only middleware that steps aside on JSON API requests.

``/api/v1/`` requests authenticate with bearer tokens (DRF puts the principal on the request) and never
use sessions, CSRF cookies or flash messages; DRF's views are CSRF-exempt. These four middlewares would
still build a session store, a lazy user, a CSRF cookie check and a message store on every API request and
inspect them on the way out, without changing the response: a measurable share of a resolve's CPU at
national scale (bench/resolve.py, docs/benchmarks.md). Pages, the admin, ``/oauth/token`` and the schema
pages keep the full behaviour. Subclasses, so Django's checks that look for these middlewares still pass.
"""

from __future__ import annotations

from django.contrib.auth.middleware import AuthenticationMiddleware as _AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as _MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as _SessionMiddleware
from django.middleware.csrf import CsrfViewMiddleware as _CsrfViewMiddleware

API_PREFIX = "/api/v1/"


class _BrowserOnly:
    get_response: object
    async_mode: bool

    def __call__(self, request):
        if not self.async_mode and request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        return super().__call__(request)


class SessionMiddleware(_BrowserOnly, _SessionMiddleware):
    pass


class CsrfViewMiddleware(_BrowserOnly, _CsrfViewMiddleware):
    # process_view still runs (Django calls it apart from __call__): DRF's views are csrf_exempt, so it
    # returns at once, as it always did.
    pass


class AuthenticationMiddleware(_BrowserOnly, _AuthenticationMiddleware):
    pass


class MessageMiddleware(_BrowserOnly, _MessageMiddleware):
    pass
