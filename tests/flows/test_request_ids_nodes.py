"""One request id across real nodes (gunicorn, a Celery worker on Redis, operator commands): the
superior's sync and the subordinate's feed, and a notify -> queued pull -> feed fetch chain, each carry
one id, logged as JSON lines on both sides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.factories import valid_uscc
from tests.support.nodes import Node, create_node, eventually, join

pytestmark = pytest.mark.federation


@pytest.fixture(scope="module")
def nodes():
    national = create_node("rid-national", role="national", redis_db=6)
    gz = create_node("rid-gz", role="provincial", code="52")
    try:
        for node in (national, gz):
            node.start_server()
        join(gz, national, anchor=national, prefix="86.52")
        national.start_worker()
        yield national, gz
    finally:
        for node in (national, gz):
            node.drop()


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def process_lines(node: Node, label: str) -> list[dict[str, Any]]:
    (log,) = [path for path in node.logs if Path(path).name.startswith(f"cir-{node.name}-{label}-")]
    return json_lines(Path(log).read_text(errors="replace"))


def command_lines(node: Node, *args: str) -> list[dict[str, Any]]:
    """Run an operator command on the node; its log lines (stderr, JSON)."""
    return json_lines(node.manage(*args))


def calls_to(lines: list[dict[str, Any]], endpoint: str) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "federation.clients" and line["url"].endswith(endpoint)]


def access(node: Node, route: str, request_id: str) -> list[dict[str, Any]]:
    return [line for line in process_lines(node, "web")
            if line["logger"] == "cir.access" and line["route"] == route and line["request_id"] == request_id]


def test_the_superiors_sync_and_the_subordinates_feed_log_one_request_id(nodes):
    national, gz = nodes
    lines = command_lines(national, "cir_sync", "--once")
    feed_calls = calls_to(lines, "/federation/changes")
    assert feed_calls, lines
    request_id = feed_calls[0]["request_id"]
    # Every line of the command, every call it made, carries its one fresh id.
    assert {line["request_id"] for line in lines} == {request_id}
    assert {line["node"] for line in lines} == {national.url}
    assert calls_to(lines, "/oauth/token") and calls_to(lines, "/.well-known/openid-federation")
    eventually(lambda: access(gz, "federation/changes", request_id), timeout=30,
               what="the subordinate's access line for the feed with the superior's request id", nodes=[gz])
    (line, *_) = access(gz, "federation/changes", request_id)
    assert line["status"] == 200 and line["node"] == gz.url and line["method"] == "GET"
    assert line["client"] == "127.0.0.1" and line["duration_ms"] >= 0
    # The token the superior fetched went to the subordinate's token endpoint under the same id.
    assert [line for line in process_lines(gz, "web") if line["request_id"] == request_id
            and line.get("route") == "oauth/token"]


def test_a_notify_the_queued_pull_and_the_feed_fetch_carry_one_request_id(nodes):
    national, gz = nodes
    gz.manage("cir_provider_add", "--name", "Request Id Compute", "--uscc", valid_uscc(5207), "--code", "RID",
              "--json")
    lines = command_lines(gz, "cir_sync", "--once")  # no subordinates: it notifies its superior
    (notify,) = calls_to(lines, "/federation/notify")
    assert notify["status"] == 202
    request_id = notify["request_id"]
    # The superior's web process logs the notify under the subordinate's id ...
    eventually(lambda: access(national, "federation/notify", request_id), timeout=30,
               what="the superior's access line for the notify", nodes=[national])
    # ... queues the pull with it; its worker pulls under the same id ...
    eventually(lambda: calls_to([line for line in process_lines(national, "worker")
                                 if line["request_id"] == request_id], "/federation/changes"),
               timeout=60, what="the superior's worker pulling under the notify's id", nodes=[national])
    # ... and the subordinate logs the feed fetch under it.
    eventually(lambda: access(gz, "federation/changes", request_id), timeout=30,
               what="the subordinate's access line for the feed under the notify's id", nodes=[gz])
    worker = [line for line in process_lines(national, "worker") if line["request_id"] == request_id]
    assert {line["node"] for line in worker} == {national.url}
    assert any(line["logger"] == "celery.app.trace" for line in worker)  # the task's own success line
