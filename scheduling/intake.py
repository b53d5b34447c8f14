"""A reference job intake for providers: verifies each submission offline with the kit and, when it
accepts, acknowledges the handoff at the issuing node with the provider's credential key. A few dozen
lines on purpose: a real site puts the same calls in front of slurmrestd or in an admission webhook.

    python -m scheduling.intake --listen 127.0.0.1:9000 --prefix 86.52.GZ01 \\
        --endpoint https://slurm.gz.example/jobs --anchor https://cir.national.example.cn \\
        --anchor-jwks anchor.json --provider-key provider-private.jwk
"""

from __future__ import annotations

import argparse
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from identity import crypto

from .kit import AnchorKeys, Verifier

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_BODY = 1024 * 1024


def acknowledge(issuer: str, handoff_id: str, prefix: str, private_key: Any, accepted: bool, reason: str) -> int:
    """Ack at the issuing node as the provider (client_id = prefix, key = the credential's key)."""
    token_url = f"{issuer}/oauth/token"
    assertion = crypto.client_assertion(prefix, private_key, token_url)
    token = requests.post(token_url, data={"grant_type": "client_credentials", "client_assertion_type":
                                           ASSERTION_TYPE, "client_assertion": assertion, "scope": "handoff:ack"},
                          timeout=10).json()["access_token"]
    return requests.post(f"{issuer}/api/v1/handoffs/{handoff_id}/ack", json={"accepted": accepted, "reason": reason},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def make_server(listen: tuple[str, int], verifier: Verifier, private_key: Any) -> ThreadingHTTPServer:
    class Intake(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length") or "0"
            if not length.isdigit() or int(length) > MAX_BODY:
                self.send_error(413 if length.isdigit() else 400)
                return
            body = self.rfile.read(int(length))
            decision = verifier.verify(authorization=self.headers.get("Authorization"),
                                       dpop=self.headers.get("DPoP"), method="POST", body=body)
            answer: dict[str, Any] = {"accepted": decision.accepted, "reason": decision.reason}
            if decision.accepted:  # a real intake would queue the job here, then acknowledge
                claims = decision.claims
                answer["ack_status"] = acknowledge(claims["iss"], claims["handoff_id"], verifier.provider_prefix,
                                                   private_key, True, "queued")
                if answer["ack_status"] != 200:  # the node refused the ack (e.g. expired): don't run it
                    answer.update(accepted=False, reason="ack_refused")
            payload = json.dumps(answer).encode()
            self.send_response(202 if answer["accepted"] else 409 if answer["reason"] == "ack_refused"
                               else 401 if "proof" in decision.reason or "ticket" in decision.reason else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return ThreadingHTTPServer(listen, Intake)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m scheduling.intake")
    for name in ("--listen", "--prefix", "--endpoint", "--anchor", "--anchor-jwks", "--provider-key"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    with open(args.anchor_jwks, encoding="utf-8") as handle:
        anchor_jwks = json.load(handle)
    with open(args.provider_key, encoding="utf-8") as handle:
        private_key = crypto.load_private_jwk(json.load(handle))
    keys = AnchorKeys(args.anchor, anchor_jwks["keys"] if isinstance(anchor_jwks, dict) else anchor_jwks)
    verifier = Verifier(provider_prefix=args.prefix, endpoint_url=args.endpoint, keys=keys)
    make_server((host, int(port)), verifier, private_key).serve_forever()


if __name__ == "__main__":
    main()
