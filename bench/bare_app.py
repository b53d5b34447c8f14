"""The bare baseline app: WSGI + psycopg + orjson, no framework. Serve it with the same gunicorn as CIR:

    BARE_DSN="host=127.0.0.1 user=postgres dbname=cir_million" \\
        .venv/bin/gunicorn --pythonpath bench bare_app:application -w 4

- ``GET /api/v1/resolve/{ucri}``: the point lookup of CIR's resolve (resource joined with its provider and
  site, plus the ongoing and announced downtimes of the resource or its site) in one query, rendered as
  the same JSON record (CONTRACT §3) with a strong ETag over the bytes; 404 when unknown.
- ``POST /api/v1/resolve`` ``{"ucris": [...]}``: the same rows for up to 1000 UCRIs in one query.
- ``GET /healthz``.

It skips what the framework does around the lookup: forgiving UCRI parsing (it only upper-cases),
referrals, tombstone problems, ``If-None-Match``, rate limits and middleware. ``fetch_one``/``fetch_many``
and ``render`` are also used in-process by the benchmarks as the floor without HTTP.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
from decimal import Decimal
from typing import Any

import orjson
import psycopg

_COLUMNS = """
    r.ucri, r.status, r.version, r.updated_at, r.local_id, r.name, r.kind, r.site_id, r.accelerator,
    r.accelerator_model, r.accelerator_count, r.node_count, r.fp64_tflops, r.fp32_tflops, r.fp16_tflops,
    r.int8_tops, r.memory_gb, r.storage_tb, r.price_per_hour, r.price_unit, r.price_per_million_tokens,
    r.endpoints, r.retired_at, r.authority, r.source, r.synced_at,
    p.name, p.prefix, p.credential_status, p.credential_expires_at,
    s.version, s.name, s.province, s.hub, s.pue, s.wue, s.cue, s.green_ratio, s.rack_availability,
    (SELECT json_agg(json_build_object(
                'id', d.id, 'version', d.version, 'resource', CASE WHEN d.resource_id IS NULL THEN NULL ELSE r.ucri END,
                'site_id', d.site_id, 'start', d.start, 'end', d."end", 'classification', d.classification,
                'reason', d.reason) ORDER BY d.start, d.id)
       FROM registry_downtime d
      WHERE d."end" > now() AND (d.resource_id = r.id OR d.site_id = r.site_id))
"""
_FROM = """
    FROM registry_resource r
    JOIN registry_provider p ON p.id = r.provider_id
    JOIN registry_site s ON s.id = r.site_id
"""
ONE_SQL = f"SELECT {_COLUMNS} {_FROM} WHERE r.ucri = %s"
MANY_SQL = f"SELECT {_COLUMNS} {_FROM} WHERE r.ucri = ANY(%s)"


def _ts(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _num(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def render(row: tuple, now: dt.datetime) -> dict[str, Any]:
    (ucri, status, version, updated_at, local_id, name, kind, site_id, accelerator, accelerator_model,
     accelerator_count, node_count, fp64, fp32, fp16, int8, memory_gb, storage_tb, price, price_unit,
     price_tokens, endpoints, retired_at, authority, source, synced_at,
     p_name, p_prefix, p_status, p_expires,
     s_version, s_name, s_province, s_hub, s_pue, s_wue, s_cue, s_green, s_racks, downtimes) = row
    if p_status not in (None, "revoked") and p_expires is not None and p_expires <= now:
        p_status = "expired"
    record: dict[str, Any] = {
        "ucri": ucri, "status": status, "version": version, "updated_at": _ts(updated_at),
        "local_id": local_id, "name": name, "kind": kind, "site_id": str(site_id), "accelerator": accelerator,
        "accelerator_model": accelerator_model, "accelerator_count": accelerator_count, "node_count": node_count,
        "fp64_tflops": fp64, "fp32_tflops": fp32, "fp16_tflops": fp16, "int8_tops": int8, "memory_gb": memory_gb,
        "storage_tb": storage_tb, "price_per_hour": _num(price), "price_unit": price_unit,
        "price_per_million_tokens": _num(price_tokens), "endpoints": endpoints,
    }
    if retired_at is not None:
        record["retired_at"] = _ts(retired_at)
    record["provider"] = {"name": p_name, "prefix": p_prefix, "credential_status": p_status}
    record["site"] = {"id": str(site_id), "version": s_version, "name": s_name, "province": s_province, "hub": s_hub,
                      "pue": s_pue, "wue": s_wue, "cue": s_cue, "green_ratio": s_green, "rack_availability": s_racks}
    record["downtimes"] = downtimes or []
    record["authority"] = authority
    record["source"] = source
    if source == "mirror":
        record["synced_at"] = _ts(synced_at)
    return record


def connect(dsn: str | None = None) -> psycopg.Connection:
    conn = psycopg.connect(dsn or os.environ["BARE_DSN"], autocommit=True)
    conn.execute("SET TIME ZONE 'UTC'")
    return conn


def fetch_one(conn: psycopg.Connection, ucri: str) -> dict[str, Any] | None:
    row = conn.execute(ONE_SQL, (ucri,)).fetchone()
    return None if row is None else render(row, dt.datetime.now(dt.UTC))


def fetch_many(conn: psycopg.Connection, ucris: list[str]) -> dict[str, dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    return {row[0]: render(row, now) for row in conn.execute(MANY_SQL, (ucris,))}


def etag(content: bytes) -> str:
    return '"' + base64.urlsafe_b64encode(hashlib.sha256(content).digest()).decode().rstrip("=") + '"'


# ---------------------------------------------------------------------------------------------------
# WSGI

_conn: psycopg.Connection | None = None
_NOT_FOUND = orjson.dumps({"type": "about:blank", "title": "Not Found", "status": 404, "code": "ucri_unknown"})


def _connection() -> psycopg.Connection:
    global _conn
    if _conn is None or _conn.closed:
        _conn = connect()
    return _conn


def _answer(start_response, status: str, body: bytes, content_type: str = "application/json",
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *(headers or [])])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if path.startswith("/api/v1/resolve/") and method == "GET":
        record = fetch_one(_connection(), path[len("/api/v1/resolve/"):].strip().upper())
        if record is None:
            return _answer(start_response, "404 Not Found", _NOT_FOUND, "application/problem+json")
        body = orjson.dumps(record)
        return _answer(start_response, "200 OK", body, headers=[("ETag", etag(body))])
    if path == "/api/v1/resolve" and method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        ucris = orjson.loads(environ["wsgi.input"].read(length))["ucris"][:1000]
        canonical = {text: text.strip().upper() for text in ucris}
        found = fetch_many(_connection(), list(set(canonical.values())))
        results = {text: found.get(ucri) or orjson.Fragment(_NOT_FOUND) for text, ucri in canonical.items()}
        return _answer(start_response, "200 OK", orjson.dumps({"results": results}))
    if path == "/healthz":
        return _answer(start_response, "200 OK", b"ok", "text/plain")
    return _answer(start_response, "404 Not Found", b"{}")
