"""The PostgreSQL backend's health check (core/backends/postgresql): no round trip for a connection that
is as it was left, the old ``SELECT 1`` only when the server has sent something, and a connection the
server has closed is found unusable before a request uses it."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.db.backends.postgresql import base

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL backend")]


def test_an_idle_connection_is_usable_without_a_query(monkeypatch):
    connection.ensure_connection()

    def no_round_trip(self):
        raise AssertionError("the health check ran a query")

    monkeypatch.setattr(base.DatabaseWrapper, "is_usable", no_round_trip)
    assert connection.is_usable()


def test_a_connection_the_server_closed_is_unusable():
    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    other = connection.get_new_connection(connection.get_connection_params())
    try:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()
    deadline = time.monotonic() + 10
    while connection.is_usable() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not connection.is_usable()
    finally:
        connection.close()  # the next query reconnects, as Django does after a failed health check
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
