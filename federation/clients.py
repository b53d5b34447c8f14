"""The only code that calls other nodes over HTTP. Every answer is size-capped and time-limited, and
every failure becomes a ``PeerError`` with a stable reason, so a peer that is down, slow or lying can
only make a pull fail, never corrupt what we hold."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import requests

from core import requestid
from identity import crypto, keys, oauth
from identity.models import Purpose

CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
DEADLINE = 60  # seconds for a whole answer: a peer dripping one byte at a time is cut off
MAX_BYTES = {"entity-statement+jwt": 64 * 1024, "jwk-set+jwt": 64 * 1024, "change-page+jwt": 16 * 1024 * 1024,
             "json": 1024 * 1024, "statuslist+jwt": 1024 * 1024, "audit-checkpoint+jwt": 4 * 1024}
USER_AGENT = "cir-federation/1"
log = logging.getLogger(__name__)


class PeerError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _request(method: str, url: str, *, kind: str, **kwargs) -> Answer:
    cap = MAX_BYTES[kind]
    # The peer logs our request id with its access line: one id follows a pull across nodes.
    headers = {"User-Agent": USER_AGENT, requestid.HEADER: requestid.ensure(), **kwargs.pop("headers", {})}
    started = time.monotonic()
    status: int | str = "-"
    try:
        with requests.request(method, url, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True,
                              allow_redirects=False, **kwargs) as response:
            status = response.status_code
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body.extend(chunk)
                if len(body) > cap:
                    status = "oversized"
                    raise PeerError("oversized", f"{url} sent more than {cap} bytes")
                if time.monotonic() - started > DEADLINE:
                    status = "timeout"
                    raise PeerError("timeout", f"{url} took longer than {DEADLINE} s")
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return Answer(response.status_code, content_type, bytes(body))
    except requests.Timeout as exc:
        status = "timeout"
        raise PeerError("timeout", f"{url} timed out") from exc
    except requests.RequestException as exc:
        status = "unreachable"
        raise PeerError("unreachable", f"{url}: {exc.__class__.__name__}") from exc
    finally:
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        log.info("%s %s -> %s %.1f ms", method, url, status, duration_ms,
                 extra={"method": method, "url": url, "status": status, "duration_ms": duration_ms})


def _expect_jwt(answer: Answer, url: str, media: str) -> str:
    if answer.status == 401:
        raise PeerError("token_rejected", f"{url} refused our access token")
    if answer.status != 200:
        raise PeerError("http_error", f"{url} answered {answer.status}: {answer.text[:200]}")
    if answer.content_type != f"application/{media}":
        raise PeerError("wrong_content_type", f"{url} sent {answer.content_type or 'no content type'}")
    try:
        return answer.body.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise PeerError("malformed", f"{url} sent a body that is not a compact JWS") from exc


def fetch_jwt(url: str, media: str, *, params: dict | None = None, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _expect_jwt(_request("GET", url, kind=media, params=params, headers=headers), url, media)


def entity_configuration(entity_id: str) -> str:
    return fetch_jwt(f"{entity_id}/.well-known/openid-federation", "entity-statement+jwt")


def subordinate_statement(fetch_endpoint: str, subject: str) -> str:
    return fetch_jwt(fetch_endpoint, "entity-statement+jwt", params={"sub": subject})


def client_assertion(audience: str, own_entity_id: str) -> str:
    """A ``private_key_jwt`` assertion signed with our federation key (CONTRACT §6, node clients)."""
    node_key, private = keys.signing_key(Purpose.FEDERATION)
    return crypto.client_assertion(own_entity_id, private, audience, lifetime=120,
                                   typ="client-authentication+jwt", kid=node_key.kid)


def access_token(token_endpoint: str, own_entity_id: str, scope: str) -> tuple[str, int]:
    """An access token and how many seconds it lives, from the peer's token endpoint."""
    form = {"grant_type": "client_credentials", "client_assertion_type": oauth.ASSERTION_TYPE,
            "client_assertion": client_assertion(token_endpoint, own_entity_id), "scope": scope}
    answer = _request("POST", token_endpoint, kind="json", data=form)
    try:
        body = json.loads(answer.body)
    except ValueError as exc:
        raise PeerError("malformed", f"{token_endpoint} answered with non-JSON") from exc
    if answer.status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        error = body.get("error") if isinstance(body, dict) else None
        raise PeerError("unauthorized", f"{token_endpoint} refused us: {error or answer.status}")
    expires_in = body.get("expires_in")
    lifetime = expires_in if isinstance(expires_in, int) and not isinstance(expires_in, bool) else 60
    return body["access_token"], max(0, min(lifetime, 600))


def change_page(feed_endpoint: str, token: str, *, after: int, limit: int) -> str:
    return fetch_jwt(feed_endpoint, "change-page+jwt", params={"after": after, "limit": limit}, token=token)


def notify(notify_endpoint: str, token: str, seq: int) -> None:
    answer = _request("POST", notify_endpoint, kind="json", json={"seq": seq},
                      headers={"Authorization": f"Bearer {token}"})
    if answer.status not in (200, 202):
        raise PeerError("http_error", f"{notify_endpoint} answered {answer.status}: {answer.text[:200]}")
