"""The request id (core/requestid.py): taken from a well-formed ``X-Request-ID`` or made fresh, returned
on every response, logged on one access line per request; carried through Celery tasks and operator
commands."""

from __future__ import annotations

import io
import json
import logging
import re
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import path

from core import logs, requestid
from core.commands import OperatorCommand

FRESH = re.compile(r"[0-9a-f]{32}\Z")


def _boom(request):
    raise RuntimeError("boom")


def _whoami(request, name):
    return JsonResponse({"request_id": requestid.current(), "name": name})


urlpatterns = [path("t/boom", _boom), path("t/whoami/<str:name>", _whoami)]
here = override_settings(ROOT_URLCONF=__name__)


@pytest.fixture(autouse=True)
def _no_request_id():
    """Each test starts outside any unit of work (an earlier test's federation call outside a request
    may have left an id in this thread)."""
    token = requestid._current.set(None)
    yield
    requestid._current.reset(token)


@pytest.fixture
def access_lines():
    """The access lines, formatted as settings.LOGGING formats them, while the request runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RedactingFilter())
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("cir.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@here
def test_a_well_formed_incoming_id_is_used_and_echoed(access_lines):
    response = Client().get("/t/whoami/gz", HTTP_X_REQUEST_ID="peer-node:req_0001.a")
    assert response["X-Request-ID"] == "peer-node:req_0001.a"
    assert response.json()["request_id"] == "peer-node:req_0001.a"  # what the view (and its logs) see
    assert requestid.current() is None  # reset after the request
    (line,) = access_lines()
    assert line["request_id"] == "peer-node:req_0001.a"
    assert (line["method"], line["route"], line["status"]) == ("GET", "t/whoami/<str:name>", 200)
    assert line["client"] == "127.0.0.1" and isinstance(line["duration_ms"], float)
    assert line["message"].startswith("GET t/whoami/<str:name> 200 ")
    assert "gz" not in line["message"]  # the route pattern, not the raw path


@here
@pytest.mark.parametrize("bad", ["", "short", "has a space in it", "x" * 129, "abcdéfghij", "id;rm -rf /x",
                                 "line\nbreak-injected", "eyJhbGciOiJFUzI1NiJ9.eyJ9.sig!"])
def test_a_malformed_incoming_id_is_replaced(bad, access_lines):
    response = Client().get("/t/whoami/gz", HTTP_X_REQUEST_ID=bad)
    assert FRESH.match(response["X-Request-ID"])
    assert response.json()["request_id"] == response["X-Request-ID"]
    (line,) = access_lines()
    assert line["request_id"] == response["X-Request-ID"]
    assert not bad or bad not in json.dumps(line, ensure_ascii=False)  # garbage is not logged either


@here
def test_without_an_incoming_id_each_request_gets_its_own():
    client = Client()
    first, second = client.get("/t/whoami/a")["X-Request-ID"], client.get("/t/whoami/b")["X-Request-ID"]
    assert FRESH.match(first) and FRESH.match(second) and first != second


@here
def test_errors_and_unmatched_paths_carry_the_header_and_an_access_line(access_lines):
    client = Client(raise_request_exception=False)
    server_error = client.get("/t/boom", HTTP_X_REQUEST_ID="request-500-x")
    assert server_error.status_code == 500 and server_error["X-Request-ID"] == "request-500-x"
    missing = client.get("/no/such/page?token=abc", HTTP_X_REQUEST_ID="request-404-x")
    assert missing.status_code == 404 and missing["X-Request-ID"] == "request-404-x"
    wrong_method = client.delete("/t/whoami/x")
    assert FRESH.match(wrong_method["X-Request-ID"])
    lines = access_lines()
    assert [(line["status"], line["route"]) for line in lines] == [
        (500, "t/boom"), (404, "/no/such/page"), (200, "t/whoami/<str:name>")]  # a function view takes DELETE
    assert [line["request_id"] for line in lines[:2]] == ["request-500-x", "request-404-x"]


@pytest.mark.django_db
def test_api_errors_probes_and_federation_endpoints_carry_the_header(access_lines):
    client = Client()
    unauthorized = client.get("/federation/changes", HTTP_X_REQUEST_ID="superior-pull-0001")
    assert unauthorized.status_code == 401 and unauthorized["X-Request-ID"] == "superior-pull-0001"
    bad = client.get("/api/v1/resolve/not-a-ucri")
    assert bad.status_code == 400 and FRESH.match(bad["X-Request-ID"])
    probe = client.get("/healthz", HTTP_X_REQUEST_ID="probe-000001")
    assert probe.status_code == 200 and probe["X-Request-ID"] == "probe-000001"
    lines = access_lines()
    assert [(line["route"], line["status"], line["level"]) for line in lines] == [
        ("federation/changes", 401, "INFO"), ("api/v1/resolve/<path:ucri>", 400, "INFO"),
        ("/healthz", 200, "DEBUG")]  # a successful probe only at DEBUG: orchestrators probe every few seconds
    assert lines[0]["request_id"] == "superior-pull-0001"


@here
def test_djangos_line_for_a_4xx_logged_after_the_middleware_carries_the_id(caplog):
    caplog.set_level(logging.WARNING, logger="django.request")
    response = Client().get("/no/such/page", HTTP_X_REQUEST_ID="request-404-y")
    assert response.status_code == 404
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert json.loads(logs.JsonFormatter().format(record))["request_id"] == "request-404-y"


@override_settings(REST_FRAMEWORK={"NUM_PROXIES": 1})
def test_behind_a_trusted_proxy_the_client_is_the_forwarded_address():
    request = SimpleNamespace(META={"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.7, 203.0.113.9"})
    assert requestid.client_address(request) == "203.0.113.9"


def test_client_address_is_the_socket_peer_without_a_trusted_proxy():
    request = SimpleNamespace(META={"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "198.51.100.7"})
    assert requestid.client_address(request) == "10.0.0.2"


def test_using_sets_and_restores_and_ensure_makes_one_when_none():
    assert requestid.current() is None
    with requestid.using("outer-id-0001") as outer:
        assert outer == requestid.current() == "outer-id-0001"
        with requestid.using() as inner:
            assert FRESH.match(inner) and requestid.current() == inner
        assert requestid.current() == "outer-id-0001"
        assert requestid.ensure() == "outer-id-0001"
    assert requestid.current() is None
    with requestid.using("garbage with spaces") as replaced:
        assert FRESH.match(replaced)


def _task(task_id: str, **headers):
    return SimpleNamespace(request=SimpleNamespace(id=task_id, **headers))


def test_celery_carries_the_id_from_the_publisher_to_the_worker():
    headers: dict = {}
    requestid.on_before_publish(headers=headers)
    assert headers == {}  # nothing to carry
    with requestid.using("notify-request-01"):
        requestid.on_before_publish(headers=headers)
    assert headers == {requestid.CELERY_HEADER: "notify-request-01"}

    # In the worker: the queued id around the task, then nothing.
    requestid.on_prerun(task_id="t1", task=_task("t1", **headers))
    assert requestid.current() == "notify-request-01"
    requestid.on_postrun(task_id="t1", task=None)
    assert requestid.current() is None

    # Queued without one (beat): a fresh id per task.
    requestid.on_prerun(task_id="t2", task=_task("t2"))
    fresh = requestid.current()
    requestid.on_postrun(task_id="t2")
    requestid.on_prerun(task_id="t3", task=_task("t3"))
    assert FRESH.match(fresh) and requestid.current() not in (None, fresh)
    requestid.on_postrun(task_id="t3")
    assert requestid.current() is None

    # A malformed id in the message is not trusted.
    requestid.on_prerun(task_id="t4", task=_task("t4", headers={requestid.CELERY_HEADER: "bad id"}))
    assert FRESH.match(requestid.current())
    requestid.on_postrun(task_id="t4")


def test_an_eager_task_keeps_the_callers_id():
    with requestid.using("web-request-0002"):
        requestid.on_prerun(task_id="e1", task=_task("e1"))
        assert requestid.current() == "web-request-0002"
        requestid.on_postrun(task_id="e1")
        assert requestid.current() == "web-request-0002"


def test_a_real_eager_task_runs_under_the_callers_id(monkeypatch):
    from celery import shared_task

    @shared_task(name="tests.core.test_requestid.seen")
    def seen():
        return requestid.current()

    with requestid.using("web-request-0003"):
        assert seen.delay().get() == "web-request-0003"


class _Echo(OperatorCommand):
    def run(self, **options):
        return {"request_id": requestid.current()}


def test_operator_commands_start_with_a_fresh_id():
    outputs = []
    with requestid.using("outer-request-1"):
        for _ in range(2):
            out = io.StringIO()
            call_command(_Echo(), "--json", stdout=out)
            outputs.append(json.loads(out.getvalue())["request_id"])
        assert requestid.current() == "outer-request-1"
    assert all(FRESH.match(value) for value in outputs) and outputs[0] != outputs[1]
