#!/usr/bin/env python
"""Benchmark: batch resolve, ``POST /api/v1/resolve`` with 1,000 UCRIs, at 1,000,000 resources.

CIR runs under gunicorn (``--workers`` sync workers) on the catalog database; this process posts batches
of 1,000 UCRIs drawn at random from the whole catalog (any status: a few are retired and answer with their
tombstone problem), one request at a time, and times each answer. The baseline, interleaved batch by
batch in the same run, is one raw SQL query fetching the same rows (resource, provider, site and current
downtimes: ``bare_app.MANY_SQL``) on a psycopg connection in this process and serialising them with orjson
(no HTTP). Target: CIR's median time per batch within 3x of the baseline's. The bare app's ``POST`` over
HTTP (same gunicorn) is reported as well.

    .venv/bin/python bench/batch_resolve.py [--batches 30] [--size 1000] [--workers 4]

Prints a ``RESULT {json}`` line at the end (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import time

import bare_app
import common
import orjson


def post(server: common.Server, body: bytes) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/api/v1/resolve", body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    content = response.read()
    conn.close()
    return response.status, content, time.perf_counter() - started


def raw(conn, ucris: list[str]) -> tuple[bytes, float]:
    started = time.perf_counter()
    content = orjson.dumps({"results": bare_app.fetch_many(conn, ucris)})
    return content, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=common.CATALOG)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per side (default 30)")
    parser.add_argument("--size", type=int, default=1000, help="UCRIs per batch (<= 1000)")
    parser.add_argument("--no-catalog-check", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.size <= 1000:
        parser.error("--size is 1..1000")

    print(f"batch resolve benchmark: {common.machine_summary()}; batches of {args.size}; gunicorn {args.workers} "
          f"sync workers; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    if not args.no_catalog_check:
        common.ensure_catalog(args.database)
    pool = common.sample_ucris(args.database, args.size * (args.batches + 2), status=None, seed=7)
    batches = [pool[i * args.size:(i + 1) * args.size] for i in range(len(pool) // args.size)]
    print(f"{len(batches)} distinct batches of {args.size} random UCRIs (any status)", flush=True)

    cir = common.cir_server(args.database, workers=args.workers)
    bare = common.bare_server(args.database, workers=args.workers)
    conn = bare_app.connect(common.dsn(args.database))
    times: dict[str, list[float]] = {"cir": [], "raw": [], "bare": []}
    sizes: dict[str, list[int]] = {"cir": [], "raw": [], "bare": []}
    checks: dict[str, bool] = {}
    try:
        cir.start()
        bare.start()
        # Warm up: every worker, the connection, the plan.
        for batch in batches[:2]:
            body = orjson.dumps({"ucris": batch})
            for _ in range(args.workers):
                post(cir, body)
                post(bare, body)
            raw(conn, batch)
        status, content, _ = post(cir, orjson.dumps({"ucris": batches[0]}))
        answers = json.loads(content)["results"]
        checks["CIR answers every input"] = status == 200 and set(answers) == set(batches[0])
        checks["every answer a record or a tombstone"] = all(
            "ucri" in a or a.get("code") == "ucri_retired" for a in answers.values())
        for i in range(args.batches):
            batch = batches[2 + i % (len(batches) - 2)]
            body = orjson.dumps({"ucris": batch})
            sides = ["cir", "raw", "bare"] if i % 2 == 0 else ["raw", "bare", "cir"]
            for side in sides:
                if side == "raw":
                    content, seconds = raw(conn, batch)
                else:
                    status, content, seconds = post(cir if side == "cir" else bare, body)
                    if status != 200:
                        raise SystemExit(f"{side}: HTTP {status}: {content[:300]!r}")
                times[side].append(seconds)
                sizes[side].append(len(content))
    finally:
        conn.close()
        cir.stop()
        bare.stop()

    def ms(values: list[float], q: float | None = None) -> float:
        return 1000 * (common.median(values) if q is None else common.percentile(values, q))

    cir_ms, raw_ms, bare_ms = ms(times["cir"]), ms(times["raw"]), ms(times["bare"])
    ratio = cir_ms / raw_ms if raw_ms else 0.0
    print()
    print(f"{'':<44} {'median ms':>10} {'p95 ms':>8} {'UCRIs/s':>9} {'KB/answer':>10}")
    for side, label in (("cir", "CIR POST /api/v1/resolve (HTTP)"),
                        ("raw", "raw SQL + orjson, in process (baseline)"),
                        ("bare", "bare app POST (HTTP, same gunicorn)")):
        median_ms = ms(times[side])
        print(f"{label:<44} {median_ms:>10.1f} {ms(times[side], 95):>8.1f} "
              f"{args.size / median_ms * 1000 if median_ms else 0:>9.0f} {common.median(sizes[side]) / 1024:>10.0f}")
    print(f"CIR / raw = {ratio:.2f}x (target within 3x); CIR / bare app over HTTP = "
          f"{cir_ms / bare_ms if bare_ms else 0:.2f}x")
    for name, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    common.result("batch_resolve", figure=cir_ms, unit="ms per 1000 UCRIs", baseline=raw_ms,
                  baseline_label="one raw SQL query + orjson (psycopg, no HTTP)", ratio=ratio, target="<= 3.0",
                  met=ratio <= 3.0 and all(checks.values()), cir_p95_ms=round(ms(times["cir"], 95), 2),
                  raw_p95_ms=round(ms(times["raw"], 95), 2), bare_http_ms=round(bare_ms, 2),
                  cir_over_bare_http=round(cir_ms / bare_ms, 3) if bare_ms else None, batches=args.batches,
                  size=args.size, workers=args.workers, cores=common.cores())
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
