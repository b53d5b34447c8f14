#!/usr/bin/env python
"""Benchmark: how fast a national node mirrors a provincial node's catalog over the change feed.

Two real CIR nodes (tests/support/nodes.py: each its own PostgreSQL database cloned from the migrated
template, gunicorn on a 127.0.0.1 port) are created and joined (national anchor, provincial ``86.52``);
the provincial node gets ``cir_demo --seed 1 --resources N`` (setup, timed apart), then the national
node's ``cir_sync --once --json`` runs as a child process and is measured: wall time, changes applied
per second, peak RSS and CPU of that process, CPU of both gunicorn servers. A second ``cir_sync --once``
(which should apply nothing) is measured the same way. The baseline, timed in the same run, is
PostgreSQL ``COPY`` of the same rows into the same tables: the provincial provider, site and resource
rows and its outbox rows (what the national node relays) streamed into copies of the national
node's tables with their indexes (``LIKE ... INCLUDING ALL``). The script prints ``sync rate / COPY
rate`` and one summary line.

Not part of the test suite. Run from anywhere with the project's interpreter:

    .venv/bin/python bench/federation_sync.py --resources 100000 [--page-size 1000] [--reuse] [--keep] [--profile]

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
from common import dsn, process_group_cpu  # noqa: E402  (bench/common.py)

from tests.support.nodes import ADMIN_DSN, Node, create_node, ensure_template, join  # noqa: E402


def scalar(node: Node, sql: str, params: tuple = ()) -> Any:
    with psycopg.connect(dsn(node.database), autocommit=True) as conn:
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
    with psycopg.connect(dsn(node.database), autocommit=True) as conn:
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
        with psycopg.connect(dsn(self.node.database), autocommit=True) as conn:
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
               servers: dict[str, Node] | None = None, profile: Path | None = None,
               sampler: Path | None = None) -> Run:
    """Run ``manage.py ARGS`` on ``node`` as a child and measure it (wall, peak RSS, CPU)."""
    servers = servers or {}
    child_env = {**node.env, **(env or {})}
    command = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "manage.py", *args]
    if sampler:  # py-spy samples the child from outside: little overhead, native and idle time visible
        command = [py_spy(), "record", "--rate", "100", "--format", "raw", "--idle", "--nolineno", "--threads",
                   "--output", str(sampler), "--", *command]
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
        # The last JSON line (py-spy, when sampling, writes its own lines after it).
        result = json.loads(next(line for line in reversed(stdout_text.splitlines()) if line.startswith("{")))
    return Run(label=label, wall=wall, returncode=process.returncode, result=result, max_rss_kb=rss,
               user_cpu=user, sys_cpu=system, stderr=stderr_text[-4000:], via=via,
               server_cpu={k: after_cpu[k] - before_cpu.get(k, 0.0) for k in after_cpu},
               db_stats={k: after_db[k] - before_db[k] for k in after_db}, progress=sampler.samples)


# ---------------------------------------------------------------------------------------------------
# The COPY baseline


BASELINE_TABLES = ("registry_provider", "registry_site", "registry_resource", "core_outboxentry")


def copy_baseline(source: Node, target: Node) -> dict[str, tuple[int, float]]:
    """COPY the source's provider, site, resource and outbox rows into copies of the target's tables
    (``LIKE ... INCLUDING ALL``: the same columns, indexes and constraints, empty as the national
    node's are before its first sync), in one transaction as a page is; {table: (rows, seconds)}.

    These are the rows the sync writes: one catalog row and one relay outbox row per change. The
    copies are dropped afterwards."""
    timings: dict[str, tuple[int, float]] = {}
    with psycopg.connect(dsn(source.database)) as src, psycopg.connect(dsn(target.database)) as dst:
        for table in BASELINE_TABLES:
            dst.execute(f"DROP TABLE IF EXISTS bench_copy_{table}")
            dst.execute(f"CREATE TABLE bench_copy_{table} (LIKE {table} INCLUDING ALL)")
        dst.commit()
        dst.execute("CHECKPOINT")  # start from clean buffers, as the sync does after setup
        dst.commit()
        try:
            for table in BASELINE_TABLES:
                columns = ", ".join(f'"{r[0]}"' for r in src.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "ORDER BY ordinal_position", [table]).fetchall())
                start = time.perf_counter()
                with src.cursor().copy(f"COPY (SELECT {columns} FROM {table}) TO STDOUT") as reader, \
                        dst.cursor().copy(f"COPY bench_copy_{table} ({columns}) FROM STDIN") as writer:
                    for chunk in reader:
                        writer.write(chunk)
                dst.commit()
                seconds = time.perf_counter() - start
                rows = dst.execute(f"SELECT count(*) FROM bench_copy_{table}").fetchone()[0]
                timings[table] = (rows, seconds)
        finally:
            dst.rollback()
            for table in BASELINE_TABLES:
                dst.execute(f"DROP TABLE IF EXISTS bench_copy_{table}")
            dst.commit()
    return timings


# ---------------------------------------------------------------------------------------------------
# Keeping the built nodes between runs (--reuse)


def kept_names(resources: int, seed: int) -> dict[str, str]:
    """Databases that keep the provincial catalog and the joined national node, before any sync."""
    base = f"cir_bench_keep_{resources}_{seed}"
    return {"national": f"{base}_national", "provincial": f"{base}_gz"}


def reuse_kept(kept: dict[str, str]) -> list[Node] | None:
    """Clones of the kept nodes, migrated to this checkout's migrations (usually nothing to do); None,
    with the clones dropped, if they cannot be migrated (a migration changed under them)."""
    suffix = os.urandom(4).hex()
    nodes = []
    for role in ("national", "provincial"):
        clone(kept[role], f"cir_node_bench-{role}_{suffix}")
        nodes.append(node_from_database(f"bench-{role}", f"cir_node_bench-{role}_{suffix}"))
    for node in nodes:
        migrated = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT,
                                  env=node.env, capture_output=True, text=True)
        if migrated.returncode != 0:
            print(f"kept nodes do not migrate ({migrated.stderr.strip().splitlines()[-1:]}); rebuilding", flush=True)
            for dropped in nodes:
                dropped.drop()
            return None
    return nodes


def _admin(sql: str, params: tuple = ()) -> Any:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall() if sql.lstrip().upper().startswith("SELECT") else \
            conn.execute(sql, params)


def database_exists(name: str) -> bool:
    return bool(_admin("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def clone(template: str, name: str) -> None:
    _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def node_from_database(name: str, database: str) -> Node:
    """A node whose database was cloned from a kept one: its port is in its own entity ID."""
    with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={database}", autocommit=True) as conn:
        entity_id = conn.execute("SELECT entity_id FROM registry_platform WHERE is_self").fetchone()[0]
    return Node(name=name, port=int(entity_id.rsplit(":", 1)[1]), database=database)


def keep(nodes: dict[str, Node], names: dict[str, str]) -> None:
    """Copy the node databases to the kept names (servers stopped: a template has no other users)."""
    for role, node in nodes.items():
        node.stop()
        _admin(f'DROP DATABASE IF EXISTS "{names[role]}"')
        clone(node.database, names[role])
    for node in nodes.values():
        node.start_server()


# ---------------------------------------------------------------------------------------------------
# Reporting


def mb(kb: int | None) -> str:
    return f"{kb / 1024:.1f}" if kb is not None else "n/a"


def py_spy() -> str:
    path = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        raise SystemExit("--py-spy needs py-spy (.venv/bin/pip install py-spy)")
    return path


def show_samples(path: Path, limit: int = 30) -> None:
    """Summarise py-spy's collapsed stacks of the main thread (idle time included, so the shares are of
    wall time): the share of samples in each function, by itself and with what it calls."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or len(frames) < 2 or not frames[0].endswith(": MainThread"):
            continue  # the page fetched ahead waits in its own thread
        frames = frames[1:]
        n = int(count)
        samples += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + n
    print(f"\npy-spy ({path}): {samples:,} samples of the sync process")
    for title, table in (("self", own), ("total", total)):
        print(f"  by {title}:")
        for frame, n in sorted(table.items(), key=lambda kv: -kv[1])[:limit]:
            print(f"    {100 * n / samples:5.1f}%  {frame}")


def show_profile(path: Path, limit: int = 25) -> int:
    stats = pstats.Stats(str(path))
    # Every statement (savepoints included) reaches psycopg's Cursor.execute or Cursor.copy once.
    executes = sum(v[1] for k, v in stats.stats.items()
                   if k[2] in ("execute", "copy") and k[0].endswith("psycopg/cursor.py"))
    print(f"\nProfile ({path}): SQL statements sent by the sync process: {executes:,}")
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)
    return executes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000, help="demo resources on the provincial node")
    parser.add_argument("--page-size", type=int, default=1000,
                        help="CIR_SYNC_PAGE_SIZE for the national node's cir_sync (the feed allows <= 1000)")
    parser.add_argument("--seed", type=int, default=1, help="cir_demo seed (default 1)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the built nodes (provincial catalog, joined national node) in cir_bench_keep_* "
                             "databases and start from clones of them when they exist, instead of rebuilding")
    parser.add_argument("--keep", action="store_true", help="keep the node databases (servers are stopped)")
    parser.add_argument("--py-spy", action="store_true",
                        help="sample the first sync with py-spy (installed in the venv) and print where it spends time")
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
    kept = kept_names(args.resources, args.seed)
    reused = args.reuse and all(database_exists(name) for name in kept.values())
    try:
        if reused:
            t = time.perf_counter()
            nodes = reuse_kept(kept) or []
            reused = bool(nodes)
        if reused:
            national, provincial = nodes
            setup["clone and migrate kept nodes"] = time.perf_counter() - t
            t = time.perf_counter()
            national.start_server()
            provincial.start_server()
            setup["start servers"] = time.perf_counter() - t
            print(f"reused {kept['provincial']} and {kept['national']}", flush=True)
        else:
            t = time.perf_counter()
            ensure_template()
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

            t = time.perf_counter()
            demo = provincial.manage("cir_demo", "--seed", str(args.seed), "--resources", str(args.resources),
                                     "--json", timeout=max(600, args.resources / 100))
            setup["cir_demo"] = time.perf_counter() - t
            print(f"cir_demo: {demo['resources']:,} resources in {setup['cir_demo']:.1f} s", flush=True)
            if args.reuse:
                t = time.perf_counter()
                keep({"national": national, "provincial": provincial}, kept)
                setup["keep for --reuse"] = time.perf_counter() - t
                print(f"kept as {kept['provincial']} and {kept['national']} (drop them by hand when done)",
                      flush=True)
        print(f"nodes up: national {national.url} ({national.database}), "
              f"provincial {provincial.url} ({provincial.database})", flush=True)

        feed_head = scalar(provincial, "SELECT last FROM core_counter WHERE name = 'outbox'") or 0
        feed_entries = scalar(provincial, "SELECT count(*) FROM core_outboxentry")
        with psycopg.connect(dsn(provincial.database), autocommit=True) as conn:
            feed_by_type = dict(conn.execute(
                "SELECT type, count(*) FROM core_outboxentry GROUP BY type ORDER BY type").fetchall())
        provincial_resources = scalar(provincial, "SELECT count(*) FROM registry_resource")
        national_before = scalar(national, "SELECT count(*) FROM registry_resource")
        national_head_before = scalar(national, "SELECT last FROM core_counter WHERE name = 'outbox'") or 0

        # The baseline runs before and after the sync (on a shared machine the load drifts); the ratio
        # is against the mean of the two rates.
        print("COPY baseline (before the sync) ...", flush=True)
        baselines = [copy_baseline(provincial, national)]

        sync_env = {"CIR_SYNC_PAGE_SIZE": str(args.page_size)}
        servers = {"provincial web": provincial, "national web": national}
        profile = Path(tempfile.gettempdir(), f"cir-bench-sync-{os.getpid()}.prof") if args.profile else None
        samples = Path(tempfile.gettempdir(), f"cir-bench-sync-{os.getpid()}.pyspy") if args.py_spy else None
        print("sync 1 (measured) ...", flush=True)
        load_before = os.getloadavg()
        first = run_manage(national, ["cir_sync", "--once", "--json"], label="sync 1", env=sync_env,
                           servers=servers, profile=profile, sampler=samples)
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

        print("COPY baseline (after the sync) ...", flush=True)
        baselines.append(copy_baseline(provincial, national))

        # ---- report
        sync_rate = first.applied / first.wall if first.wall else 0.0
        # A change writes one catalog row and one relay outbox row: the baseline's rate counts catalog
        # rows, each moved together with its outbox row (the COPY time of both).
        copy_records = sum(baselines[0][t][0] for t in BASELINE_TABLES if t != "core_outboxentry")
        copy_outbox = baselines[0]["core_outboxentry"][0]
        copy_rates = [copy_records / sum(seconds for _, seconds in b.values()) for b in baselines]
        copy_rate = sum(copy_rates) / len(copy_rates)
        ratio = sync_rate / copy_rate if copy_rate else 0.0
        peak_rss_mb = (first.max_rss_kb or 0) / 1024
        checks = {
            "national resources == provincial resources": national_after - national_before == provincial_resources,
            "violations == 0": violations == 0 and first.field_sum("violations") == 0,
            "no pull errors": not first.errors and not second.errors,
            "sync 1 read the whole feed": cursor == feed_head,
            "sync 2 applied 0": second.applied == 0,
            "every applied change relayed": national_head - national_head_before == first.applied,
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
        for when, baseline in zip(("before", "after"), baselines, strict=True):
            for table, (rows, seconds) in baseline.items():
                print(f"COPY {when:<6} into a copy of {table:<18} {rows:>10,} rows in {seconds:7.2f} s = "
                      f"{rows / seconds if seconds else 0:>10,.0f} rows/s")
        print(f"COPY baseline: {copy_records:,} catalog rows and their {copy_outbox:,} outbox rows: "
              f"{' and '.join(f'{r:,.0f}' for r in copy_rates)} catalog rows/s before and after the sync, "
              f"mean {copy_rate:,.0f}")
        print(f"sync rate / COPY rate               {ratio:>12.4f}")
        print(f"cores (os.cpu_count())              {cores:>12}")
        print(f"load average (1/5/15 min) before / after sync 1: "
              f"{' '.join(f'{v:.2f}' for v in load_before)} / {' '.join(f'{v:.2f}' for v in load_after)}"
              f"  (other work on the machine skews every number above)")
        print()
        for name, passed in checks.items():
            print(f"  [{'ok' if passed else 'FAIL'}] {name}")
        statements = None
        if samples:
            show_samples(samples)
        if profile:
            print("\nnote: sync 1 ran under cProfile; its times include the profiler's overhead")
            statements = show_profile(profile)
            if first.applied:
                print(f"SQL statements per applied change: {statements / first.applied:.3f}")
        print()
        print(f"federation ingest: {sync_rate:,.0f} changes/s, baseline COPY {copy_rate:,.0f} rows/s, "
              f"ratio {ratio:.3f} (target >= 0.20), peak RSS {peak_rss_mb:.0f} MB (target < 300)"
              f"{' [profiled]' if profile or samples else ''}")
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
                "copy": {"runs": [{t: {"rows": r, "seconds": sec} for t, (r, sec) in b.items()} for b in baselines],
                         "catalog_rows": copy_records, "outbox_rows": copy_outbox, "rates": copy_rates,
                         "rate": copy_rate},
                "sync_over_copy": ratio, "peak_rss_mb": peak_rss_mb, "reused": reused,
                "sql_statements": statements, "checks": checks,
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
