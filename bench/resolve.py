#!/usr/bin/env python
"""Benchmark: single resolve, ``GET /api/v1/resolve/{ucri}``, over HTTP at 1,000,000 resources.

CIR and the bare baseline app (``bench/bare_app.py``: WSGI + psycopg + orjson doing the same point lookup
and JSON record) run under the same gunicorn (``--workers`` sync workers each) against the same catalog
database; wrk, in its own process, requests random active UCRIs (a uniform sample of the catalog) with
``--connections`` open connections. The two are measured in alternating rounds; the ratio is the median of
the rounds' CIR/bare ratios (each round's two runs are back to back): target CIR >= 35% of the bare app's
requests/s. p99 latency of both is reported. The floor is a bare
psycopg loop in this process (no HTTP): the same query and rendering on one connection.

    .venv/bin/python bench/resolve.py [--seconds 10] [--rounds 3] [--workers 4] [--connections 8] [--profile]

Prints a ``RESULT {json}`` line at the end (see bench/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time

import bare_app
import common
import orjson


def compare_records(cir: dict, bare: dict) -> list[str]:
    """Where the bare app's record differs from CIR's (it should not, apart from downtime timestamps)."""
    problems = []
    if list(cir) != list(bare):
        problems.append(f"member order/names differ: {list(cir)} vs {list(bare)}")
    for name in cir:
        if name != "downtimes" and cir.get(name) != bare.get(name):
            problems.append(f"{name}: {cir.get(name)!r} vs {bare.get(name)!r}")
    return problems


def floor_loop(database: str, ucris: list[str], seconds: float) -> dict[str, float]:
    conn = bare_app.connect(common.dsn(database))
    latencies = []
    i = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        body = orjson.dumps(bare_app.fetch_one(conn, ucris[i % len(ucris)]))
        bare_app.etag(body)
        latencies.append(time.perf_counter() - started)
        i += 1
    conn.close()
    total = sum(latencies)
    return {"rps": len(latencies) / total if total else 0.0, "p99_ms": common.percentile(latencies, 99) * 1000,
            "lookups": len(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default=common.CATALOG)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers, both apps (default 4)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10, help="each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating CIR/bare rounds (default 3)")
    parser.add_argument("--sample", type=int, default=20000, help="random active UCRIs to request")
    parser.add_argument("--floor-seconds", type=float, default=5)
    parser.add_argument("--profile", action="store_true",
                        help="after the rounds, run CIR once more under py-spy (all workers) and print the hot spots")
    parser.add_argument("--no-catalog-check", action="store_true", help="skip ensure_catalog (migrate/build)")
    args = parser.parse_args()

    print(f"resolve benchmark: {common.machine_summary()}; gunicorn {args.workers} sync workers per app; "
          f"wrk {args.wrk_threads} threads x {args.connections} connections, {args.seconds:.0f} s x {args.rounds} "
          f"rounds; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC", flush=True)
    if not args.no_catalog_check:
        common.ensure_catalog(args.database)
    ucris = common.sample_ucris(args.database, args.sample)
    print(f"{len(ucris):,} random active UCRIs from {args.database}", flush=True)
    paths = common.write_lines((f"/api/v1/resolve/{u}" for u in ucris), "resolve-paths")

    cir = common.cir_server(args.database, workers=args.workers)
    bare = common.bare_server(args.database, workers=args.workers)
    runs: dict[str, list[common.WrkResult]] = {"cir": [], "bare": []}
    try:
        cir.start()
        bare.start()
        # Same record from both (checked on a few UCRIs), then warm every worker.
        mismatches = []
        for ucri in ucris[:5]:
            status_c, body_c = common.http_get(f"{cir.url}/api/v1/resolve/{ucri}")
            status_b, body_b = common.http_get(f"{bare.url}/api/v1/resolve/{ucri}")
            if status_c != 200 or status_b != 200:
                raise SystemExit(f"resolve of {ucri}: CIR {status_c}, bare {status_b}\n{body_c[:300]!r}")
            mismatches += compare_records(json.loads(body_c), json.loads(body_b))
        print("[ok] the bare app renders the same record" if not mismatches
              else f"[warn] records differ: {mismatches[:5]}", flush=True)
        warm = [f"/api/v1/resolve/{u}" for u in ucris[:40]]
        cir.warm(warm)
        bare.warm(warm)
        for round_no in range(args.rounds):
            order = [("cir", cir), ("bare", bare)] if round_no % 2 == 0 else [("bare", bare), ("cir", cir)]
            for name, server in order:
                run = common.run_wrk(server.url, paths, label=name, seconds=args.seconds,
                                     connections=args.connections, threads=args.wrk_threads, server=server)
                runs[name].append(run)
                print(f"  round {round_no + 1} {name:<5} {run.rps:9.0f} req/s  p50 {run.p50_ms:6.2f} ms  "
                      f"p99 {run.p99_ms:6.2f} ms  errors {run.errors}  server cpu {run.server_cpu:.1f} s",
                      flush=True)
        profile_text = None
        if args.profile:
            prefix = f"/tmp/cir-bench-resolve-pyspy-{int(time.time())}"
            outputs = common.py_spy_record(cir.worker_pids(), args.seconds, prefix)
            common.run_wrk(cir.url, paths, label="cir (profiled)", seconds=args.seconds,
                           connections=args.connections, threads=args.wrk_threads)
            time.sleep(3)
            profile_text = common.summarise_collapsed(outputs)
    finally:
        cir.stop()
        bare.stop()

    print("floor: bare psycopg loop in this process (no HTTP), one connection ...", flush=True)
    floor = floor_loop(args.database, ucris, args.floor_seconds)

    cir_rps = common.median(r.rps for r in runs["cir"])
    bare_rps = common.median(r.rps for r in runs["bare"])
    cir_p99 = common.median(r.p99_ms for r in runs["cir"])
    bare_p99 = common.median(r.p99_ms for r in runs["bare"])
    # Each round's two runs are back to back: the median of the rounds' ratios follows the machine's load.
    round_ratios = [c.rps / b.rps if b.rps else 0.0 for c, b in zip(runs["cir"], runs["bare"], strict=True)]
    ratio = common.median(round_ratios)
    errors = sum(r.errors for rs in runs.values() for r in rs)
    cpu_per_req = {name: common.median(r.server_cpu / r.requests * 1000 for r in rs if r.requests)
                   for name, rs in runs.items()}
    print()
    print(f"{'':<28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU ms/req':>18}")
    print(f"{'CIR (median of rounds)':<28} {cir_rps:>9.0f} {common.median(r.p50_ms for r in runs['cir']):>8.2f} "
          f"{cir_p99:>8.2f} {cpu_per_req['cir']:>18.2f}")
    print(f"{'bare app (median)':<28} {bare_rps:>9.0f} {common.median(r.p50_ms for r in runs['bare']):>8.2f} "
          f"{bare_p99:>8.2f} {cpu_per_req['bare']:>18.2f}")
    print(f"{'floor: psycopg loop, 1 conn':<28} {floor['rps']:>9.0f} {'':>8} {floor['p99_ms']:>8.2f}")
    print(f"CIR / bare = {ratio:.3f} (median of the rounds' ratios {', '.join(f'{r:.3f}' for r in round_ratios)}; "
          f"target >= 0.35); socket errors or non-2xx: {errors}")
    if profile_text:
        print("\npy-spy, CIR workers under the same load:\n" + profile_text)
    common.result("resolve", figure=cir_rps, unit="req/s", baseline=bare_rps,
                  baseline_label="bare WSGI+psycopg app, same gunicorn and load", ratio=ratio, target=">= 0.35",
                  met=ratio >= 0.35 and errors == 0, cir_p99_ms=round(cir_p99, 2), bare_p99_ms=round(bare_p99, 2),
                  round_ratios=[round(r, 3) for r in round_ratios],
                  ratio_of_medians=round(cir_rps / bare_rps, 3) if bare_rps else None,
                  floor_rps=round(floor["rps"]), floor_p99_ms=round(floor["p99_ms"], 3), workers=args.workers,
                  connections=args.connections, rounds=args.rounds, seconds=args.seconds, errors=errors,
                  cir_cpu_ms_per_req=round(cpu_per_req["cir"], 3), bare_cpu_ms_per_req=round(cpu_per_req["bare"], 3),
                  cores=common.cores())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
