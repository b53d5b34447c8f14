"""A scriptable federation peer over real HTTP, for attack and fault tests: it serves an entity
configuration, a subordinate-statement fetch endpoint, a token endpoint and a change feed, each of
which a test can replace with something broken or hostile."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from identity import crypto

Response = tuple[int, str, bytes]


@dataclass
class FakePeer:
    prefixes: list[str]
    authority_hints: list[str] = field(default_factory=list)
    key: Any = field(default_factory=crypto.generate_private_key)
    changes: list[dict[str, Any]] = field(default_factory=list)
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Overrides: a test sets any of these to make the peer misbehave.
    page_override: Callable[[int, int], Response] | None = None
    configuration_override: Callable[[], Response] | None = None
    statements: dict[str, str] = field(default_factory=dict)  # sub -> statement served by fetch
    down: bool = False
    requests_seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, response: Response) -> None:
                status, content_type, body = response
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                peer.requests_seen.append(self.path)
                if peer.down:
                    self.close_connection = True
                    self.connection.close()
                    return
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/.well-known/openid-federation":
                    self._send(peer.configuration_override() if peer.configuration_override else peer.configuration())
                elif parts.path == "/federation/fetch" and query.get("sub") in peer.statements:
                    self._send((200, "application/entity-statement+jwt", peer.statements[query["sub"]].encode()))
                elif parts.path == "/federation/changes":
                    after, limit = int(query.get("after", 0)), int(query.get("limit", 100))
                    self._send(peer.page_override(after, limit) if peer.page_override else peer.page(after, limit))
                else:
                    self._send((404, "application/json", b'{"error": "not_found"}'))

            def do_POST(self) -> None:
                peer.requests_seen.append(self.path)
                if peer.down:
                    self.connection.close()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/oauth/token":
                    body = {"access_token": "fake-peer-token", "token_type": "Bearer", "expires_in": 300}
                    self._send((200, "application/json", json.dumps(body).encode()))
                else:
                    self._send((202, "application/json", b"{}"))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def jwk(self) -> dict[str, Any]:
        return crypto.public_jwk(self.key)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def sign(self, claims: dict[str, Any], typ: str, key: Any = None) -> str:
        key = key or self.key
        return crypto.sign(claims, key, typ=typ, kid=crypto.public_jwk(key)["kid"])

    def configuration_claims(self) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.url, "sub": self.url, "iat": now, "exp": now + 3600, "jwks": {"keys": [self.jwk]},
            "metadata": {
                "federation_entity": {"federation_fetch_endpoint": f"{self.url}/federation/fetch"},
                "compute_registry": {
                    "ucri_prefixes": self.prefixes, "api_base": f"{self.url}/api/v1",
                    "change_feed_endpoint": f"{self.url}/federation/changes",
                    "notify_endpoint": f"{self.url}/federation/notify", "token_endpoint": f"{self.url}/oauth/token",
                    "jwks_uri": f"{self.url}/.well-known/jwks.json",
                    "signed_jwks_uri": f"{self.url}/.well-known/signed-jwks"},
            },
        }
        if self.authority_hints:
            claims["authority_hints"] = self.authority_hints
        return claims

    def configuration(self) -> Response:
        return 200, "application/entity-statement+jwt", self.sign(self.configuration_claims(),
                                                                  "entity-statement+jwt").encode()

    def page_claims(self, after: int, limit: int) -> dict[str, Any]:
        selected = [c for c in self.changes if c["seq"] > after][:limit]
        more = len([c for c in self.changes if c["seq"] > after]) > limit
        now = int(time.time())
        return {"iss": self.url, "iat": now, "exp": now + 600, "epoch": self.epoch, "after": after,
                "next": selected[-1]["seq"] if selected else after, "has_more": more, "changes": selected}

    def page(self, after: int, limit: int, *, key: Any = None, typ: str = "change-page+jwt") -> Response:
        return 200, "application/change-page+jwt", self.sign(self.page_claims(after, limit), typ, key).encode()

    def add(self, type_: str, key: str, record: dict[str, Any], *, op: str = "upsert", version: int | None = None,
            authority: str | None = None) -> dict[str, Any]:
        change = {"seq": len(self.changes) + 1, "type": type_, "op": op, "key": key,
                  "authority": authority or self.url, "record": record}
        if version is not None:
            change["version"] = version
        self.changes.append(change)
        return change
