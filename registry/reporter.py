"""The provider-side availability reporter (CONTRACT §13): read JSON lines (from a file, stdin, or a
command such as an ``sinfo`` adaptor run every few seconds) and post them, batched, to the provider's
home node, authenticated as the provider with its credential key. No database needed."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from identity import crypto

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BATCH = 1000


class ReportError(Exception):
    pass


def parse_lines(lines: Iterable[str], *, valid_for: int, now: dt.datetime | None = None) -> Iterator[dict[str, Any]]:
    """JSON objects, one per line: ``ucri`` and ``available_units``, optionally ``queued_jobs``,
    ``observed_at`` (default: now) and ``valid_for`` (default: the reporter's)."""
    stamp = (now or dt.datetime.now(dt.UTC)).isoformat().replace("+00:00", "Z")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise ReportError(f"line {number}: not JSON") from exc
        if not isinstance(item, dict) or "ucri" not in item or "available_units" not in item:
            raise ReportError(f"line {number}: an object with ucri and available_units is expected")
        item.setdefault("observed_at", stamp)
        item.setdefault("valid_for", valid_for)
        yield item


@dataclass
class Reporter:
    node: str  # the provider's home node (entity ID)
    prefix: str
    private_key: Any
    session: requests.Session = field(default_factory=requests.Session)
    _token: tuple[str, float] | None = None

    def token(self) -> str:
        if self._token and self._token[1] > time.monotonic() + 15:
            return self._token[0]
        url = f"{self.node}/oauth/token"
        assertion = crypto.client_assertion(self.prefix, self.private_key, url)
        answer = self.session.post(url, data={"grant_type": "client_credentials", "client_assertion_type":
                                              ASSERTION_TYPE, "client_assertion": assertion,
                                              "scope": "resources:write"}, timeout=15)
        if answer.status_code != 200:
            raise ReportError(f"token refused: {answer.text[:200]}")
        body = answer.json()
        self._token = (body["access_token"], time.monotonic() + int(body.get("expires_in", 60)))
        return self._token[0]

    def send(self, reports: list[dict[str, Any]]) -> int:
        accepted = 0
        for start in range(0, len(reports), BATCH):
            batch = reports[start:start + BATCH]
            answer = self.session.post(f"{self.node}/api/v1/availability", json={"reports": batch},
                                       headers={"Authorization": f"Bearer {self.token()}"}, timeout=30)
            if answer.status_code != 202:
                raise ReportError(f"reports refused ({answer.status_code}): {answer.text[:300]}")
            accepted += answer.json()["accepted"]
        return accepted


def poll(command: str, *, interval: float, count: int | None, reporter: Reporter, valid_for: int,
         log=print) -> int:
    """Run ``command`` every ``interval`` seconds and report what it prints (JSON lines)."""
    sent = rounds = 0
    while count is None or rounds < count:
        started = time.monotonic()
        # The operator's own command line, as given to the reporter (like cron would run it).
        try:
            output = subprocess.run(command, shell=True, capture_output=True, text=True,  # noqa: S602
                                    timeout=max(interval, 30), check=False)
        except subprocess.TimeoutExpired:
            log(f"command timed out after {max(interval, 30)} s; trying again next round")
            output = None
        if output is None:
            pass
        elif output.returncode != 0:
            log(f"command failed ({output.returncode}): {output.stderr.strip()[:200]}")
        else:
            try:
                sent += reporter.send(list(parse_lines(output.stdout.splitlines(), valid_for=valid_for)))
            except (ReportError, requests.RequestException) as exc:
                log(f"report failed: {exc}")
        rounds += 1
        if count is None or rounds < count:
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    return sent
