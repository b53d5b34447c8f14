"""Real child processes for integration tests: Celery workers and (later) whole CIR nodes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url_for_children() -> str:
    """The URL of the database this test runs on, for child processes to share it."""
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def child_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SETTINGS"))}
    env.update({"DEBUG": "1", "CIR_REQUIRE_HTTPS": "0", "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "config.settings"})
    env.update(overrides)
    return env


@contextmanager
def celery_worker(queue: str, broker_url: str, database_url: str) -> Iterator[subprocess.Popen]:
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo", "-Q", queue,
               "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    process = subprocess.Popen(command, cwd=ROOT, env=child_env(CELERY_BROKER_URL=broker_url,
                                                                DATABASE_URL=database_url),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_for(predicate, *, timeout: float = 30.0, interval: float = 0.2, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
