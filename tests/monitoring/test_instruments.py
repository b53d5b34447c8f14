"""The request instruments: outcomes read from responses with bounded labels, and prometheus-client's
multiprocess mode, where a scrape of any gunicorn worker adds up every worker's counts."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from django.http import JsonResponse
from django.test import RequestFactory
from django.urls import resolve

from monitoring import metrics, middleware
from tests.monitoring.scraping import Scrape

ROOT = Path(__file__).resolve().parents[2]


def _count(counter, outcome: str) -> float:
    return counter.labels(outcome)._value.get()


def _post(path: str, response: JsonResponse) -> None:
    request = RequestFactory().post(path)
    request.resolver_match = resolve(path)
    middleware.observe(request, response, 0.01)


def test_acknowledgement_outcomes_and_codes_are_bounded():
    before = {o: _count(metrics.HANDOFF_ACKS, o) for o in ("accepted", "rejected", "handoff_expired", "other")}
    path = "/api/v1/handoffs/5f0c3c1e-64a3-4f55-9a8e-0c1b7f1d2e3a/ack"
    _post(path, JsonResponse({"status": "accepted"}))
    _post(path, JsonResponse({"status": "rejected"}))
    _post(path, JsonResponse({"code": "handoff_expired"}, status=409))
    _post(path, JsonResponse({"code": "Not A Code; DROP TABLE"}, status=400))
    _post(path, JsonResponse(["not", "an", "object"], safe=False, status=400))
    after = {o: _count(metrics.HANDOFF_ACKS, o) for o in before}
    assert {o: after[o] - before[o] for o in before} == {"accepted": 1, "rejected": 1, "handoff_expired": 1, "other": 2}


def test_unmatched_paths_are_one_label():
    request = RequestFactory().get("/no/such/path/86.52.GZ01/7Y74J71FN896-I")
    before = metrics.HTTP_REQUESTS.labels(middleware.UNMATCHED, "GET", "4xx")._value.get()
    middleware.observe(request, JsonResponse({}, status=404), 0.001)
    assert metrics.HTTP_REQUESTS.labels(middleware.UNMATCHED, "GET", "4xx")._value.get() == before + 1
    request = RequestFactory().generic("BREW", "/healthz")
    middleware.observe(request, JsonResponse({}, status=405), 0.001, route="healthz")
    assert metrics.HTTP_REQUESTS.labels("healthz", "other", "4xx")._value.get() >= 1


WORKER = textwrap.dedent("""
    import django
    django.setup()
    from django.test import Client
    client = Client()
    for _ in range({n}):
        assert client.get("/healthz").status_code == 200
""")
SCRAPE = textwrap.dedent("""
    import django
    django.setup()
    from prometheus_client import generate_latest
    from monitoring import metrics
    print(generate_latest(metrics.scrape_registry(node=False, compute=False, readiness=False)).decode())
""")


def test_multiprocess_mode_adds_up_every_workers_counts(tmp_path):
    """Two 'workers' count requests into PROMETHEUS_MULTIPROC_DIR; a third process's scrape holds both."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings",
           "DEBUG": "1", "CIR_REQUIRE_HTTPS": "0"}

    def run(code: str) -> str:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(WORKER.format(n=3))
    run(WORKER.format(n=4))
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one set of files per process
    data = Scrape(run(SCRAPE))
    assert data.value("cir_http_requests_total", route="healthz", method="GET", status="2xx") == 7
    assert data.value("cir_http_request_duration_seconds_count", route="healthz", method="GET") == 7
    assert "process_cpu_seconds_total" not in data.text  # one worker's CPU would be misleading here
