#!/usr/bin/env python
"""Benchmark: how fast a national node mirrors a provincial node's catalog over the change feed.

Two real CIR nodes (tests/support/nodes.py: each its own PostgreSQL database cloned from the migrated
template, gunicorn on a 127.0.0.1 port) are created and joined (national anchor, provincial ``86.52``);
the provincial node gets ``cir_demo --seed 1 --resources N`` (setup, timed apart), then the national
node's ``cir_sync --once --json`` runs as a child process and is measured: wall time, changes applied
per second, peak RSS and CPU of that process, CPU of both gunicorn servers. A second ``cir_sync --once``
(which should apply nothing) is measured the same way. The baseline is a plain ``COPY`` of the same
``registry_resource`` rows from the provincial database into a scratch table in the national one,
timed in the same run; the script prints ``sync rate / COPY rate``.

Not part of the test suite. Run from anywhere with the project's interpreter:

    .venv/bin/python bench/federation_sync.py --resources 100000 [--page-size 500] [--keep] [--profile]

Needs the local PostgreSQL at 127.0.0.1:5432 (user postgres, no password), like the node tests.
The node databases are always dropped at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# tests.support.processes imports django.db (lazily configured); the nodes' children get their own env.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

import psycopg  # noqa: E402

from tests.support.nodes import Node, create_node, join  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def dsn(node: Node) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={node.database}"


def scalar(node: Node, sql: str, params: tuple = ()) -> Any:
    with psycopg.connect(dsn(node), autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()[0]


# ---------------------------------------------------------------------------------------------------
# Measuring a child process


@dataclass
class Run:
    label: str
    wall: float
    returncode: int
    result: dict[str, Any] | None
    max_rss_kb: int | None
    user_cpu: float | None
    sys_cpu: float | None
    stderr: str
    via: str
    server_cpu: dict[str, float] = field(default_factory=dict)
    db_stats: dict[str, int] = field(default_factory=dict)
    progress: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, committed head)

    @property
    def applied(self) -> int:
        return sum(p["applied"] for p in (self.result or {}).get("peers", []))

    def field_sum(self, name: str) -> int:
        return sum(p.get(name) or 0 for p in (self.result or {}).get("peers", []))

    @property
    def errors(self) -> list[str]:
        return [p["error"] for p in (self.result or {}).get("peers", []) if p.get("error")]


def gnu_time() -> str | None:
    """``/usr/bin/time`` if it is GNU time (``-v`` and ``-o``), else None."""
    path = shutil.which("time")
    if path is None:
        return None
    try:
        probe = subprocess.run([path, "-v", "-o", os.devnull, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if probe.returncode == 0 else None


def _parse_gnu_time(text: str) -> tuple[int | None, float | None, float | None]:
    def find(pattern: str) -> str | None:
        match = re.search(pattern, text)
        return match.group(1) if match else None

    rss, user, system = (find(r"Maximum resident set size \(kbytes\): (\d+)"),
                         find(r"User time \(seconds\): ([\d.]+)"), find(r"System time \(seconds\): ([\d.]+)"))
    return (int(rss) if rss else None, float(user) if user else None, float(system) if system else None)


def process_group_cpu(pgid: int) -> float:
    """User+system CPU seconds of the live processes in a process group (a gunicorn master and workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2:].split()
        if int(rest[2]) == pgid:  # field 5: pgrp; fields 14, 15: utime, stime
            total += int(rest[11]) + int(rest[12])
    return total / CLK_TCK


STAT_SQL = """
SELECT d.xact_commit + d.xact_rollback, d.tup_inserted, d.tup_updated, d.tup_deleted, d.tup_fetched,
       d.blks_read + d.blks_hit,
       (SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_tables),
       (SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables)
FROM pg_stat_database d WHERE d.datname = current_database()
"""
STAT_NAMES = ("transactions", "tup_inserted", "tup_updated", "tup_deleted", "tup_fetched", "blocks_touched",
              "idx_scans", "seq_scans")


def db_stats(node: Node) -> dict[str, int]:
    # Backends flush their counters when they go idle (at most ~1 s later on PostgreSQL 15).
    time.sleep(1.2)
    with psycopg.connect(dsn(node), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(STAT_SQL).fetchone()
    return dict(zip(STAT_NAMES, (int(v) for v in row), strict=True))


class HeadSampler(threading.Thread):
    """Polls the node's committed outbox head (each applied change is relayed there, one commit per
    page) to see whether the apply rate holds up as the tables grow."""

    def __init__(self, node: Node, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.node, self.interval, self.samples = node, interval, []
        self.done = threading.Event()
        self.start_time = time.perf_counter()

    def run(self) -> None:
        with psycopg.connect(dsn(self.node), autocommit=True) as conn:
            while not self.done.wait(self.interval):
                head = conn.execute("SELECT last FROM core_counter WHERE name = 'outbox'").fetchone()
                self.samples.append((time.perf_counter() - self.start_time, head[0] if head else 0))


def rate_by_quarter(samples: list[tuple[float, int]]) -> list[float]:
    """Changes per second in each quarter of the run, from the head samples."""
    if len(samples) < 8:
        return []
    total = samples[-1][1] - samples[0][1]
    if total <= 0:
        return []
    rates = []
    for q in range(4):  # from the last sample at or below the quarter's start to the first at or above its end
        lo, hi = samples[0][1] + total * q / 4, samples[0][1] + total * (q + 1) / 4
        first = max([s for s in samples if s[1] <= lo] or [samples[0]], key=lambda s: s[1])
        last = min([s for s in samples if s[1] >= hi] or [samples[-1]], key=lambda s: s[1])
        rates.append((last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else 0.0)
    return rates


def run_manage(node: Node, args: list[str], *, label: str, env: dict[str, str] | None = None,
               servers: dict[str, Node] | None = None, profile: Path | None = None) -> Run:
    """Run ``manage.py ARGS`` on ``node`` as a child and measure it (wall, peak RSS, CPU)."""
    servers = servers or {}
    child_env = {**node.env, **(env or {})}
    command = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "manage.py", *args]
    timer = gnu_time()
    before_db = db_stats(node)
    before_cpu = {name: process_group_cpu(n.processes[0].pid) for name, n in servers.items() if n.processes}
    with tempfile.TemporaryDirectory() as tmp:
        out, err, timing = Path(tmp, "out"), Path(tmp, "err"), Path(tmp, "time")
        if timer:
            command = [timer, "-v", "-o", str(timing), *command]
        with out.open("w") as stdout, err.open("w") as stderr:
            sampler = HeadSampler(node)
            start = time.perf_counter()
            process = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=stdout, stderr=stderr)
            sampler.start()
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - start
            sampler.done.set()
            sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        if timer and timing.exists():
            rss, user, system = _parse_gnu_time(timing.read_text())
            via = "/usr/bin/time -v"
        else:
            rss, user, system, via = usage.ru_maxrss, usage.ru_utime, usage.ru_stime, "wait4 rusage"
        stdout_text, stderr_text = out.read_text(), err.read_text()
    after_cpu = {name: process_group_cpu(n.processes[0].pid) for name, n in servers.items() if n.processes}
    after_db = db_stats(node)
    result = None
    if process.returncode == 0 and "--json" in args:
        result = json.loads(stdout_text.strip().splitlines()[-1])
    return Run(label=label, wall=wall, returncode=process.returncode, result=result, max_rss_kb=rss,
               user_cpu=user, sys_cpu=system, stderr=stderr_text[-4000:], via=via,
               server_cpu={k: after_cpu[k] - before_cpu.get(k, 0.0) for k in after_cpu},
               db_stats={k: after_db[k] - before_db[k] for k in after_db}, progress=sampler.samples)


# ---------------------------------------------------------------------------------------------------
# The COPY baseline


def copy_baseline(source: Node, target: Node, *, with_indexes: bool) -> tuple[int, float]:
    """COPY the source's registry_resource rows into a fresh table in the target; (rows, seconds).

    The table has the same columns (``LIKE registry_resource``); ``with_indexes`` adds the same indexes
    and constraints, closer to what the sync has to maintain. It is dropped afterwards."""
    table = "bench_copy_resource_idx" if with_indexes else "bench_copy_resource"
    like = "INCLUDING ALL" if with_indexes else "INCLUDING DEFAULTS"
    with psycopg.connect(dsn(source)) as src, psycopg.connect(dsn(target)) as dst:
        columns = [r[0] for r in src.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'registry_resource' "
            "ORDER BY ordinal_position").fetchall()]
        column_list = ", ".join(f'"{c}"' for c in columns)
        dst.execute(f"DROP TABLE IF EXISTS {table}")
        dst.execute(f"CREATE TABLE {table} (LIKE registry_resource {like})")
        dst.commit()
        start = time.perf_counter()
        with src.cursor().copy(f"COPY (SELECT {column_list} FROM registry_resource) TO STDOUT") as reader, \
                dst.cursor().copy(f"COPY {table} ({column_list}) FROM STDIN") as writer:
            for chunk in reader:
                writer.write(chunk)
        dst.commit()
        seconds = time.perf_counter() - start
        rows = dst.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        dst.execute(f"DROP TABLE {table}")
        dst.commit()
    return rows, seconds


# ---------------------------------------------------------------------------------------------------
# Reporting


def mb(kb: int | None) -> str:
    return f"{kb / 1024:.1f}" if kb is not None else "n/a"


def show_profile(path: Path, limit: int = 25) -> None:
    stats = pstats.Stats(str(path))
    # Every statement (savepoints included) reaches psycopg's Cursor.execute once.
    executes = sum(v[1] for k, v in stats.stats.items() if k[2] == "execute" and k[0].endswith("psycopg/cursor.py"))
    print(f"\nProfile ({path}): SQL statements sent by the sync process: {executes:,}")
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000, help="demo resources on the provincial node")
    parser.add_argument("--page-size", type=int, default=500,
                        help="CIR_SYNC_PAGE_SIZE for the national node's cir_sync (the feed allows <= 1000)")
    parser.add_argument("--seed", type=int, default=1, help="cir_demo seed (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the node databases (servers are stopped)")
    parser.add_argument("--profile", action="store_true",
                        help="run the first sync under cProfile and print the hot spots (inflates its times)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()

    cores = os.cpu_count()
    print(f"federation sync benchmark: {args.resources:,} resources, page size {args.page_size}, "
          f"{cores} cores, python {sys.executable}", flush=True)
    nodes: list[Node] = []
    setup: dict[str, float] = {}
    ok = True
    try:
        t = time.perf_counter()
        national = create_node("bench-national", role="national")
        nodes.append(national)
        provincial = create_node("bench-gz", role="provincial", code="52")
        nodes.append(provincial)
        setup["create nodes"] = time.perf_counter() - t

        t = time.perf_counter()
        national.start_server()
        provincial.start_server()
        setup["start servers"] = time.perf_counter() - t

        t = time.perf_counter()
        join(provincial, national, anchor=national, prefix="86.52")
        setup["join"] = time.perf_counter() - t
        print(f"nodes up: national {national.url} ({national.database}), "
              f"provincial {provincial.url} ({provincial.database})", flush=True)

        t = time.perf_counter()
        demo = provincial.manage("cir_demo", "--seed", str(args.seed), "--resources", str(args.resources),
                                 "--json", timeout=max(600, args.resources / 100))
        setup["cir_demo"] = time.perf_counter() - t
        print(f"cir_demo: {demo['resources']:,} resources in {setup['cir_demo']:.1f} s", flush=True)

        feed_head = scalar(provincial, "SELECT last FROM core_counter WHERE name = 'outbox'") or 0
        feed_entries = scalar(provincial, "SELECT count(*) FROM core_outboxentry")
        with psycopg.connect(dsn(provincial), autocommit=True) as conn:
            feed_by_type = dict(conn.execute(
                "SELECT type, count(*) FROM core_outboxentry GROUP BY type ORDER BY type").fetchall())
        provincial_resources = scalar(provincial, "SELECT count(*) FROM registry_resource")
        national_before = scalar(national, "SELECT count(*) FROM registry_resource")

        sync_env = {"CIR_SYNC_PAGE_SIZE": str(args.page_size)}
        servers = {"provincial web": provincial, "national web": national}
        profile = Path(tempfile.gettempdir(), f"cir-bench-sync-{os.getpid()}.prof") if args.profile else None
        print("sync 1 (measured) ...", flush=True)
        load_before = os.getloadavg()
        first = run_manage(national, ["cir_sync", "--once", "--json"], label="sync 1", env=sync_env,
                           servers=servers, profile=profile)
        if first.returncode != 0:
            print(first.stderr, file=sys.stderr)
            raise SystemExit(f"cir_sync failed with exit code {first.returncode}")
        load_after = os.getloadavg()
        print(f"sync 1: {first.wall:.1f} s", flush=True)
        print("sync 2 (should apply nothing) ...", flush=True)
        second = run_manage(national, ["cir_sync", "--once", "--json"], label="sync 2", env=sync_env,
                            servers=servers)
        if second.returncode != 0:
            print(second.stderr, file=sys.stderr)
            raise SystemExit(f"second cir_sync failed with exit code {second.returncode}")

        national_after = scalar(national, "SELECT count(*) FROM registry_resource")
        national_mirrored = scalar(national, "SELECT count(*) FROM registry_resource WHERE source = 'mirror'")
        violations = scalar(national, "SELECT count(*) FROM federation_violation")
        national_head = scalar(national, "SELECT last FROM core_counter WHERE name = 'outbox'") or 0
        cursor = max((p["cursor"] for p in first.result["peers"]), default=0)

        print("COPY baselines ...", flush=True)
        copy_rows, copy_seconds = copy_baseline(provincial, national, with_indexes=False)
        copy_idx_rows, copy_idx_seconds = copy_baseline(provincial, national, with_indexes=True)

        # ---- report
        sync_rate = first.applied / first.wall if first.wall else 0.0
        copy_rate = copy_rows / copy_seconds if copy_seconds else 0.0
        copy_idx_rate = copy_idx_rows / copy_idx_seconds if copy_idx_seconds else 0.0
        checks = {
            "national resources == provincial resources": national_after - national_before == provincial_resources,
            "violations == 0": violations == 0 and first.field_sum("violations") == 0,
            "no pull errors": not first.errors and not second.errors,
            "sync 1 read the whole feed": cursor == feed_head,
            "sync 2 applied 0": second.applied == 0,
        }
        ok = all(checks.values())

        print()
        print("setup (not measured)")
        for name, seconds in setup.items():
            print(f"  {name:<28} {seconds:8.1f} s")
        print()
        print(f"provincial feed head (outbox seq)   {feed_head:>12,}   entries {feed_entries:,} "
              f"({', '.join(f'{k} {v:,}' for k, v in feed_by_type.items())})")
        print(f"provincial resources                {provincial_resources:>12,}")
        print(f"national resources before / after   {national_before:>12,} / {national_after:,} "
              f"(mirrored {national_mirrored:,})")
        print(f"national feed head after (relayed)  {national_head:>12,}")
        print(f"violations on national              {violations:>12,}")
        print()
        header = (f"{'run':<8} {'wall s':>9} {'pages':>6} {'applied':>9} {'stale':>7} {'viol':>5} "
                  f"{'applied/s':>10} {'peak RSS MB':>12} {'user s':>8} {'sys s':>7} "
                  f"{'prov web cpu s':>15} {'natl web cpu s':>15}")
        print(header)
        print("-" * len(header))
        for run in (first, second):
            rate = run.applied / run.wall if run.wall else 0.0
            print(f"{run.label:<8} {run.wall:>9.2f} {run.field_sum('pages'):>6} {run.applied:>9,} "
                  f"{run.field_sum('stale'):>7,} {run.field_sum('violations'):>5} {rate:>10,.0f} "
                  f"{mb(run.max_rss_kb):>12} {run.user_cpu or 0:>8.1f} {run.sys_cpu or 0:>7.1f} "
                  f"{run.server_cpu.get('provincial web', 0):>15.1f} {run.server_cpu.get('national web', 0):>15.1f}")
        print(f"(peak RSS and CPU via {first.via}; web CPU = gunicorn master + workers of each node)")
        print()
        if first.applied:
            per = {k: v / first.applied for k, v in first.db_stats.items()}
            print("national database work during sync 1, per applied change: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
        quarters = rate_by_quarter(first.progress)
        if quarters:
            print("sync 1 applied/s by quarter of the feed (committed head, sampled every 2 s): "
                  + " | ".join(f"{r:,.0f}" for r in quarters))
        print()
        print(f"COPY baseline (plain table)         {copy_rows:>12,} rows in {copy_seconds:7.2f} s = "
              f"{copy_rate:>10,.0f} rows/s")
        print(f"COPY baseline (same indexes)        {copy_idx_rows:>12,} rows in {copy_idx_seconds:7.2f} s = "
              f"{copy_idx_rate:>10,.0f} rows/s")
        print(f"sync rate / COPY rate               {sync_rate / copy_rate if copy_rate else 0:>12.4f}   "
              f"(1 : {copy_rate / sync_rate if sync_rate else float('inf'):,.0f})")
        print(f"sync rate / COPY rate (indexed)     {sync_rate / copy_idx_rate if copy_idx_rate else 0:>12.4f}")
        print(f"cores (os.cpu_count())              {cores:>12}")
        print(f"load average (1/5/15 min) before / after sync 1: "
              f"{' '.join(f'{v:.2f}' for v in load_before)} / {' '.join(f'{v:.2f}' for v in load_after)}"
              f"  (other work on the machine skews every number above)")
        print()
        for name, passed in checks.items():
            print(f"  [{'ok' if passed else 'FAIL'}] {name}")
        if profile:
            print("\nnote: sync 1 ran under cProfile; its times include the profiler's overhead")
            show_profile(profile)
        if args.json:
            print(json.dumps({
                "resources": args.resources, "page_size": args.page_size, "cores": cores,
                "load_average": {"before_sync": load_before, "after_sync": load_after},
                "setup_seconds": setup, "feed_head": feed_head, "provincial_resources": provincial_resources,
                "national_resources": national_after, "violations": violations,
                "sync": [{"label": r.label, "wall": r.wall, "applied": r.applied,
                          "rate": r.applied / r.wall if r.wall else 0, "max_rss_mb": (r.max_rss_kb or 0) / 1024,
                          "user_cpu": r.user_cpu, "sys_cpu": r.sys_cpu, "server_cpu": r.server_cpu,
                          "db_stats": r.db_stats, "result": r.result,
                          "rate_by_quarter": rate_by_quarter(r.progress)} for r in (first, second)],
                "copy": {"rows": copy_rows, "seconds": copy_seconds, "rate": copy_rate},
                "copy_indexed": {"rows": copy_idx_rows, "seconds": copy_idx_seconds, "rate": copy_idx_rate},
                "sync_over_copy": sync_rate / copy_rate if copy_rate else None, "checks": checks,
            }, separators=(",", ":")))
    finally:
        for node in reversed(nodes):
            try:
                if args.keep:
                    node.stop()
                    print(f"kept database {node.database} ({node.name})")
                else:
                    node.drop()
            except Exception as exc:  # keep cleaning up the others
                print(f"cleanup of {node.name} failed: {exc}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
