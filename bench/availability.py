#!/usr/bin/env python
"""Benchmark: live availability reports (CONTRACT §13) on one real node.

One CIR node (tests/support/nodes.py: its own PostgreSQL database cloned from the migrated template,
gunicorn on a 127.0.0.1 port with ``--workers``/``--threads``, ``CIR_RATE_LIMITS=off``) gets one provider
(``cir_provider_add --json``, which prints the provider's private JWK), one site and N resources. Then,
from this process:

1. HTTP throughput: ``--clients`` threads, each a ``registry.reporter.Reporter`` (private_key_jwt token,
   then ``POST /api/v1/availability``), post batches of ``min(N, 1000)`` reports for ``--load-seconds``;
   every report carries a fresh ``observed_at`` (strictly increasing across the whole run), so each is
   newer than the one held. Each client posts its own batch of resources, as separate reporters would
   (so ``clients x batch`` resources are created when that exceeds N); ``--contended`` makes every
   client post the same N instead. Reports in 202 answers per second, batch latency p50/p90/p99.
2. Baseline, same run: bare psycopg connections (as many as HTTP clients, then a single one) execute
   the service's own multi-row ``INSERT ... ON CONFLICT DO UPDATE ... WHERE newer`` (``_UPSERT``, read
   from ``registry/availability.py``) for the same rows, batch size and duration, one transaction per
   batch, with client-side parameter binding like Django's. Reports per second; HTTP / baseline.
3. Feed size: the N resources report every second for ``--seconds`` (one HTTP batch per second, as a
   provider's reporter would); every ``--pull-every`` seconds a "pull" runs ``publish_pending()`` (what
   the change-feed view does before serving a page) in a long-lived ``manage.py shell`` on the node, and
   the ``core_outboxentry`` rows of type ``availability`` it added are counted: entries, distinct UCRIs,
   the most entries of one UCRI (must be <= 1), and the total feed entries against the total reports.

No timing thresholds: the script prints rates, the ratio against the in-run baseline and the core count.
Correctness checks on what it measured are printed as [ok]/[FAIL] (exit status 1 if one fails).

    .venv/bin/python bench/availability.py [--resources 1000] [--seconds 60] [--workers 2]

Needs the local PostgreSQL at 127.0.0.1:5432 (user postgres, no password), like the node tests. The
node database is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# tests.support.processes imports django.db (lazily configured); the node's children get their own env.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

import psycopg  # noqa: E402
import requests  # noqa: E402
from common import dsn, process_group_cpu  # noqa: E402  (bench/common.py)

from identity import crypto  # noqa: E402  (pure: no settings, no database)
from registry.reporter import Reporter  # noqa: E402
from tests.support.nodes import Node, create_node  # noqa: E402
from tests.support.processes import wait_for  # noqa: E402

UTC = dt.UTC


def load_upsert_sql() -> str:
    """``_UPSERT`` exactly as the service runs it (read from the source, so the baseline follows it)."""
    source = (ROOT / "registry" / "availability.py").read_text(encoding="utf-8")
    match = re.search(r'^_UPSERT = """(.*?)"""', source, re.S | re.M)
    if not match:
        raise SystemExit("cannot find _UPSERT in registry/availability.py")
    return match.group(1)


def valid_uscc(n: int) -> str:
    """An 18-character unified social credit code with a correct check character (as tests/support)."""
    from stdnum.cn import uscc

    body = f"9152{n:06d}MA{n % 10000:04d}"[:17].ljust(17, "0")
    return body + uscc.calc_check_digit(body)






def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class Clock:
    """Strictly increasing ``observed_at`` stamps shared by every writer: each report newer than all before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = dt.datetime.now(UTC)

    def block(self, n: int) -> dt.datetime:
        with self._lock:
            base = max(dt.datetime.now(UTC), self._last + dt.timedelta(microseconds=1))
            self._last = base + dt.timedelta(microseconds=n - 1)
        return base


def stamps(base: dt.datetime, n: int) -> list[dt.datetime]:
    return [base + dt.timedelta(microseconds=i) for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# Node set-up

SETUP_SCRIPT = """
import json
from django.db import transaction
from registry import services
from registry.models import Provider
provider = Provider.objects.get(prefix={prefix!r})
with transaction.atomic():
    site = services.site_create(provider=provider, data=dict(name="Bench DC", province="52", pue=1.2,
                                green_ratio=0.5, rack_availability=0.3))
    for i in range({count}):
        services.resource_create(provider=provider, data=dict(local_id=f"avb-{{i:06d}}", name=f"GPU pool {{i}}",
            kind="intelligent", site_id=str(site.id), accelerator="GPU", accelerator_model="A100 SXM 80GB",
            accelerator_count=64, node_count=8, price_per_hour="8.5", price_unit="card",
            endpoints=[dict(type="slurm", url="https://slurm.bench.example/slurmrestd")]))
print(json.dumps({{"site": str(site.id)}}))
"""

# A long-lived Django process on the node: one line in -> one publish_pending() -> one JSON line out.
PULLER_SCRIPT = """
import json, sys, time
from registry import availability
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    started = time.perf_counter()
    published = availability.publish_pending()
    print(json.dumps({"published": published, "seconds": time.perf_counter() - started}), flush=True)
"""


def production_env() -> dict[str, str]:
    """DEBUG=0 is the production configuration (CONTRACT §11); plain HTTP on loopback."""
    from cryptography.fernet import Fernet

    return {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(40),
            "CIR_KEY_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "CIR_REQUIRE_HTTPS": "0", "CIR_RATE_LIMITS": "off"}


def start_server(node: Node, workers: int, threads: int) -> Any:
    process = node._spawn([sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind",
                           f"127.0.0.1:{node.port}", "--workers", str(workers), "--threads", str(threads),
                           "--timeout", "120", "--backlog", "256"], "web")

    def up() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"gunicorn exited ({process.returncode}):\n{node.log_tail()}")
        try:
            return requests.get(f"{node.url}/.well-known/openid-federation", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, timeout=90, what=f"{node.name} to serve on {node.url}")
    return process


class Puller:
    def __init__(self, node: Node) -> None:
        self.process = subprocess.Popen([sys.executable, "manage.py", "shell", "-v0", "-c", PULLER_SCRIPT], cwd=ROOT,
                                        env=node.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        self._read()

    def _read(self) -> dict[str, Any]:
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise SystemExit(f"the puller exited: {self.process.stderr.read()[-2000:]}")
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)

    def pull(self) -> dict[str, Any]:
        self.process.stdin.write("pull\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=15)


# ---------------------------------------------------------------------------------------------------
# Phase 1: HTTP throughput


@dataclass
class Load:
    label: str
    clients: int
    wall: float = 0.0
    batches: int = 0
    reports: int = 0
    accepted: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.reports / self.wall if self.wall else 0.0


def report_batch(ucris: list[str], base: dt.datetime, second: int) -> list[dict[str, Any]]:
    return [{"ucri": u, "available_units": (i + second) % 65, "queued_jobs": (i * 7 + second) % 5,
             "observed_at": s.isoformat().replace("+00:00", "Z"), "valid_for": 60}
            for i, (u, s) in enumerate(zip(ucris, stamps(base, len(ucris)), strict=True))]


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def assign(items: list, clients: int, batch: int, contended: bool) -> list[list[list]]:
    """Each client's batches: its own ``batch`` items (disjoint, as separate reporters), or, contended,
    every client cycling through the same items (their upserts then wait on each other's row locks)."""
    if contended:
        return [chunks(items, batch)] * clients
    return [[items[i * batch:(i + 1) * batch]] for i in range(clients)]


def run_threads(load: Load, seconds: float, work, server_pgid: int | None) -> Load:
    """``work(index, deadline, load, lock)`` in ``load.clients`` threads; wall from start to the last join."""
    lock = threading.Lock()
    cpu0, srv0 = own_cpu(), process_group_cpu(server_pgid) if server_pgid else 0.0
    started = time.perf_counter()
    deadline = started + seconds
    threads = [threading.Thread(target=work, args=(i, deadline, load, lock), daemon=True) for i in range(load.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.wall = time.perf_counter() - started
    load.client_cpu = own_cpu() - cpu0
    load.server_cpu = (process_group_cpu(server_pgid) - srv0) if server_pgid else 0.0
    return load


def http_load(node: Node, prefix: str, key: Any, work_items: list[list[list[str]]], clock: Clock, *, seconds: float,
              server_pgid: int) -> Load:
    clients = len(work_items)
    reporters = [Reporter(node=node.url, prefix=prefix, private_key=key) for _ in range(clients)]
    for r in reporters:
        r.token()  # tokens up front: not part of the measured loop (each lasts CIR_ACCESS_TOKEN_LIFETIME)

    def work(index: int, deadline: float, load: Load, lock: threading.Lock) -> None:
        reporter, batches, n = reporters[index], work_items[index], index
        while time.perf_counter() < deadline:
            chunk = batches[n % len(batches)]
            n += 1
            body = report_batch(chunk, clock.block(len(chunk)), n)
            t = time.perf_counter()
            try:
                answer = reporter.session.post(f"{node.url}/api/v1/availability", json={"reports": body},
                                               headers={"Authorization": f"Bearer {reporter.token()}"}, timeout=60)
            except requests.RequestException as exc:
                with lock:
                    load.errors.append(str(exc)[:200])
                continue
            took = time.perf_counter() - t
            with lock:
                if answer.status_code == 202:
                    load.batches += 1
                    load.reports += len(body)
                    load.accepted += answer.json()["accepted"]
                    load.latencies.append(took)
                else:
                    load.errors.append(f"{answer.status_code} {answer.text[:200]}")
            if len(load.errors) > 20:
                return

    return run_threads(Load("HTTP POST /api/v1/availability", clients), seconds, work, server_pgid)


# ---------------------------------------------------------------------------------------------------
# Phase 2: bare psycopg baseline


def baseline_load(node: Node, sql: str, work_items: list[list[list[int]]], authority: str, clock: Clock, *,
                  seconds: float, label: str) -> Load:
    clients = len(work_items)
    statements = {len(b): sql.format(values=", ".join(["(%s, %s, %s, %s, %s, %s, %s, TRUE)"] * len(b)))
                  for batches in work_items for b in batches}
    # Client-side binding, as Django's default psycopg 3 cursor (the service's _upsert) does.
    connections = [psycopg.connect(dsn(node.database), cursor_factory=psycopg.ClientCursor) for _ in range(clients)]
    valid = dt.timedelta(seconds=60)

    def work(index: int, deadline: float, load: Load, lock: threading.Lock) -> None:
        conn, batches, n = connections[index], work_items[index], index
        while time.perf_counter() < deadline:
            chunk = batches[n % len(batches)]
            n += 1
            when = stamps(clock.block(len(chunk)), len(chunk))
            params = []
            for i, (pk, observed) in enumerate(zip(chunk, when, strict=True)):
                params += [pk, (i + n) % 65, (i * 7 + n) % 5, observed, 60, observed + valid, authority]
            t = time.perf_counter()
            try:
                with conn.transaction():
                    applied = conn.execute(statements[len(chunk)], params).rowcount
            except psycopg.Error as exc:
                with lock:
                    load.errors.append(str(exc)[:200])
                if len(load.errors) > 20:
                    return
                continue
            took = time.perf_counter() - t
            with lock:
                load.batches += 1
                load.reports += len(chunk)
                load.accepted += applied
                load.latencies.append(took)

    try:
        return run_threads(Load(label, clients), seconds, work, None)
    finally:
        for conn in connections:
            conn.close()


# ---------------------------------------------------------------------------------------------------
# Phase 3: the feed, N resources reporting every second


@dataclass
class Pull:
    at: float
    published: int
    seconds: float
    entries: int
    distinct: int
    max_per_resource: int
    reports_since: int


def feed_entries_since(conn: psycopg.Connection, after: int) -> tuple[int, int, int, int]:
    row = conn.execute(
        "SELECT count(*), count(DISTINCT key), coalesce(max(c), 0), coalesce(max(seq), %s) FROM ("
        " SELECT key, seq, count(*) OVER (PARTITION BY key) AS c FROM core_outboxentry"
        " WHERE type = 'availability' AND seq > %s) t", (after, after)).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def feed_phase(node: Node, prefix: str, key: Any, ucris: list[str], clock: Clock, puller: Puller, *,
               seconds: int, pull_every: float, batch: int) -> dict[str, Any]:
    reporter = Reporter(node=node.url, prefix=prefix, private_key=key)
    reporter.token()
    batches = chunks(ucris, batch)
    state = {"posted": 0, "accepted": 0, "late": 0, "max_lag": 0.0, "errors": [], "latencies": []}
    lock = threading.Lock()
    started = time.perf_counter()

    def poster() -> None:
        for second in range(seconds):
            due = started + second
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            elif pause < -0.1:
                state["late"] += 1
                state["max_lag"] = max(state["max_lag"], -pause)
            for chunk in batches:
                body = report_batch(chunk, clock.block(len(chunk)), second)
                t = time.perf_counter()
                try:
                    answer = reporter.session.post(f"{node.url}/api/v1/availability", json={"reports": body},
                                                   headers={"Authorization": f"Bearer {reporter.token()}"},
                                                   timeout=60)
                except requests.RequestException as exc:
                    state["errors"].append(str(exc)[:200])
                    continue
                state["latencies"].append(time.perf_counter() - t)
                if answer.status_code == 202:
                    with lock:
                        state["posted"] += len(body)
                        state["accepted"] += answer.json()["accepted"]
                else:
                    state["errors"].append(f"{answer.status_code} {answer.text[:200]}")

    pulls: list[Pull] = []
    with psycopg.connect(dsn(node.database), autocommit=True) as conn:
        head = conn.execute("SELECT coalesce(max(seq), 0) FROM core_outboxentry").fetchone()[0]
        posted_at_last = 0

        def pull() -> None:
            nonlocal head, posted_at_last
            result = puller.pull()
            entries, distinct, most, head_after = feed_entries_since(conn, head)
            with lock:
                posted = state["posted"]
            pulls.append(Pull(time.perf_counter() - started, result["published"], result["seconds"], entries,
                              distinct, most, posted - posted_at_last))
            head, posted_at_last = max(head, head_after), posted
            print(f"  pull {len(pulls):>3} at {pulls[-1].at:6.1f} s: {entries:,} availability entries "
                  f"({distinct:,} UCRIs, at most {most} per UCRI) for {pulls[-1].reports_since:,} reports; "
                  f"publish_pending {result['seconds'] * 1000:.0f} ms", flush=True)

        thread = threading.Thread(target=poster, daemon=True)
        thread.start()
        k = 1
        while thread.is_alive():
            due = started + k * pull_every
            while thread.is_alive() and time.perf_counter() < due:
                time.sleep(min(0.05, max(0.0, due - time.perf_counter())))
            if not thread.is_alive():
                break
            pull()
            k += 1
        thread.join()
        wall = time.perf_counter() - started
        pull()  # the tail since the last periodic pull
    state.update(pulls=pulls, wall=wall)
    return state


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=1000, help="resources of the one provider (default 1000)")
    parser.add_argument("--seconds", type=int, default=60,
                        help="feed phase: every resource reports once a second for this long (default 60)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker (default 2)")
    parser.add_argument("--clients", type=int, default=None,
                        help="concurrent load-generator threads (HTTP) and connections (baseline); "
                             "default workers * threads")
    parser.add_argument("--load-seconds", type=float, default=15.0,
                        help="duration of the HTTP throughput run and of each baseline run (default 15)")
    parser.add_argument("--batch", type=int, default=1000, help="reports per batch (<= 1000, default 1000)")
    parser.add_argument("--pull-every", type=float, default=10.0, help="feed phase: seconds between pulls (default 10)")
    parser.add_argument("--contended", action="store_true",
                        help="throughput runs: every client posts the same resources (their upserts wait on each "
                             "other's row locks); default: each client its own batch of resources")
    parser.add_argument("--debug", action="store_true",
                        help="run the node with DEBUG=1 like the node tests (default: DEBUG=0, production settings)")
    parser.add_argument("--keep", action="store_true", help="keep the node database (the server is stopped)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args()
    if not 1 <= args.batch <= 1000 or args.resources < 1 or args.seconds < 1:
        parser.error("--batch is 1..1000; --resources and --seconds are positive")
    clients = args.clients or args.workers * args.threads
    batch = min(args.batch, args.resources)
    # Disjoint throughput runs need a batch of resources per client (the feed phase uses the first N).
    total = args.resources if args.contended else max(args.resources, clients * batch)
    cores = os.cpu_count()
    sql = load_upsert_sql()

    print(f"availability benchmark: {args.resources:,} resources reporting ({total:,} created), batches of {batch}, "
          f"gunicorn {args.workers} workers x {args.threads} threads, {clients} "
          f"{'contended' if args.contended else 'disjoint'} clients, {cores} cores, "
          f"{'DEBUG=1' if args.debug else 'DEBUG=0'}, python {sys.executable}", flush=True)
    node: Node | None = None
    puller: Puller | None = None
    setup: dict[str, float] = {}
    ok = True
    try:
        t = time.perf_counter()
        node = create_node("bench-avail", role="national",
                           extra_env={"CIR_RATE_LIMITS": "off"} if args.debug else production_env())
        setup["create node"] = time.perf_counter() - t

        t = time.perf_counter()
        web = start_server(node, args.workers, args.threads)
        setup["start gunicorn"] = time.perf_counter() - t
        print(f"node up: {node.url} ({node.database})", flush=True)

        t = time.perf_counter()
        onboarded = node.manage("cir_provider_add", "--name", "Availability Bench Co", "--uscc", valid_uscc(7301),
                                "--code", "AVB", "--json")
        prefix, key = onboarded["prefix"], crypto.load_private_jwk(onboarded["private_jwk"])
        node.shell(SETUP_SCRIPT.format(prefix=prefix, count=total))
        with psycopg.connect(dsn(node.database), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT r.id, r.ucri, p.authority FROM registry_resource r JOIN registry_provider p"
                " ON p.id = r.provider_id WHERE p.prefix = %s AND r.source = 'local' ORDER BY r.id",
                (prefix,)).fetchall()
        pks, all_ucris, authority = [r[0] for r in rows], [r[1] for r in rows], rows[0][2]
        ucris = all_ucris[:args.resources]  # the feed phase's reporting resources
        setup["provider, site, resources"] = time.perf_counter() - t
        print(f"provider {prefix}: {len(all_ucris):,} resources in {setup['provider, site, resources']:.1f} s",
              flush=True)

        clock = Clock()
        # Warm up (untimed): every availability row exists, every worker has imported and connected.
        http_items = assign(all_ucris, clients, batch, args.contended)
        sql_items = assign(pks, clients, batch, args.contended)
        warm = http_load(node, prefix, key, http_items, clock, seconds=2.0, server_pgid=web.pid)
        if warm.errors:
            raise SystemExit(f"warm-up failed: {warm.errors[:3]}\n{node.log_tail()}")

        print(f"HTTP load ({args.load_seconds:.0f} s) ...", flush=True)
        load_before = os.getloadavg()
        http = http_load(node, prefix, key, http_items, clock, seconds=args.load_seconds, server_pgid=web.pid)
        print(f"baseline, {clients} connection(s) ({args.load_seconds:.0f} s) ...", flush=True)
        base = baseline_load(node, sql, sql_items, authority, clock, seconds=args.load_seconds,
                             label=f"bare psycopg upsert, {clients} conn")
        base1 = None
        if clients > 1:
            print(f"baseline, 1 connection ({args.load_seconds:.0f} s) ...", flush=True)
            base1 = baseline_load(node, sql, sql_items[:1], authority, clock, seconds=args.load_seconds,
                                  label="bare psycopg upsert, 1 conn")
        load_after = os.getloadavg()

        print(f"feed phase: {len(ucris):,} resources reporting every second for {args.seconds} s, "
              f"a pull every {args.pull_every:.0f} s ...", flush=True)
        puller = Puller(node)
        flushed = 0
        while (done := puller.pull()["published"]) > 0:  # what the throughput runs left: not part of the phase
            flushed += done
        print(f"  (flushed {flushed:,} pending reports of the throughput runs first)", flush=True)
        feed = feed_phase(node, prefix, key, ucris, clock, puller, seconds=args.seconds,
                          pull_every=args.pull_every, batch=1000)
        pulls: list[Pull] = feed["pulls"]
        feed_total = sum(p.entries for p in pulls)
        worst = max((p.max_per_resource for p in pulls), default=0)

        # ---- report
        ratio = http.rate / base.rate if base.rate else 0.0
        checks = {
            "no HTTP errors": not http.errors and not feed["errors"],
            "no baseline errors": not base.errors and not (base1 and base1.errors),
            "at most one feed entry per resource per pull": worst <= 1,
            "every report of the feed phase accepted (202)": feed["posted"] == args.seconds * len(ucris),
            "feed entries == published by publish_pending": feed_total == sum(p.published for p in pulls),
            "every resource in the feed after the phase": len(pulls) > 0 and all(
                p.distinct == len(ucris) for p in pulls if p.reports_since >= len(ucris)),
        }
        ok = all(checks.values())

        print()
        print("setup (not measured)")
        for name, seconds in setup.items():
            print(f"  {name:<28} {seconds:8.1f} s")
        print()
        header = (f"{'run':<34} {'clients':>7} {'wall s':>7} {'batches':>8} {'reports':>10} {'reports/s':>10} "
                  f"{'newer':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'web cpu s':>10} {'gen cpu s':>10}")
        print(header)
        print("-" * len(header))
        for run in (http, base, base1):
            if run is None:
                continue
            lat = [x * 1000 for x in run.latencies]
            print(f"{run.label:<34} {run.clients:>7} {run.wall:>7.1f} {run.batches:>8,} {run.reports:>10,} "
                  f"{run.rate:>10,.0f} {run.accepted:>10,} "
                  f"{pct(lat, 50):>8.1f} {pct(lat, 90):>8.1f} {pct(lat, 99):>8.1f} "
                  f"{run.server_cpu:>10.1f} {run.client_cpu:>10.1f}")
        print("(latency: one batch, request to 202 or to commit; newer: reports that replaced the held one, the "
              "service's `accepted` or the upsert's rowcount;\n web cpu = gunicorn master + workers; gen cpu = this "
              "process: building, encoding and sending the batches)")
        if args.contended:
            print("contended: concurrent batches of the same resources can commit out of stamp order, so fewer "
                  "reports are newer than were sent")
        print()
        print(f"HTTP rate / baseline rate ({clients} conn)     {ratio:>8.3f}   (target >= 0.30)")
        if base1:
            print(f"HTTP rate / baseline rate (1 conn)      {http.rate / base1.rate if base1.rate else 0:>8.3f}")
        if http.server_cpu:
            print(f"gunicorn CPU per 1,000 HTTP reports     {http.server_cpu / http.reports * 1000 * 1000:>8.1f} ms")
        print(f"cores (os.cpu_count())                  {cores:>8}")
        print(f"load average (1/5/15 min) before / after the throughput runs: "
              f"{' '.join(f'{v:.2f}' for v in load_before)} / {' '.join(f'{v:.2f}' for v in load_after)}"
              "  (other work on the machine skews every number above)")
        print()
        flat = [x * 1000 for x in feed["latencies"]]
        print(f"feed phase: {len(ucris):,} resources x {args.seconds} s = {feed['posted']:,} reports posted "
              f"({feed['accepted']:,} newer) in {feed['wall']:.1f} s; batch p50 {pct(flat, 50):.0f} ms, "
              f"p99 {pct(flat, 99):.0f} ms; seconds started late {feed['late']} (max lag {feed['max_lag']:.2f} s)")
        header = (f"{'pull':>4} {'at s':>7} {'reports':>9} {'entries':>8} {'UCRIs':>7} {'max/UCRI':>9} "
                  f"{'publish ms':>11}")
        print(header)
        print("-" * len(header))
        for i, p in enumerate(pulls, 1):
            print(f"{i:>4} {p.at:>7.1f} {p.reports_since:>9,} {p.entries:>8,} {p.distinct:>7,} "
                  f"{p.max_per_resource:>9} {p.seconds * 1000:>11.0f}")
        per_pull = [p.entries / len(ucris) for p in pulls if p.entries]
        print(f"feed entries total {feed_total:,} for {feed['posted']:,} reports "
              f"({feed_total / feed['posted'] if feed['posted'] else 0:.4f} entries per report); "
              f"most entries per resource per pull: {worst}; "
              f"mean entries per resource per pull {statistics.mean(per_pull) if per_pull else 0:.3f}")
        print()
        for name, passed in checks.items():
            print(f"  [{'ok' if passed else 'FAIL'}] {name}")
        for label, errors in (("HTTP", http.errors + feed["errors"]), ("baseline", base.errors)):
            if errors:
                print(f"{label} errors (first 3): {errors[:3]}")
        if args.json:
            def run_json(run: Load | None) -> dict[str, Any] | None:
                if run is None:
                    return None
                lat = [x * 1000 for x in run.latencies]
                return {"label": run.label, "clients": run.clients, "wall": run.wall, "batches": run.batches,
                        "reports": run.reports, "accepted": run.accepted, "rate": run.rate,
                        "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
                        "server_cpu": run.server_cpu, "client_cpu": run.client_cpu, "errors": len(run.errors)}

            print(json.dumps({
                "resources": len(ucris), "batch": batch, "workers": args.workers, "threads": args.threads,
                "clients": clients, "cores": cores, "debug": args.debug, "setup_seconds": setup,
                "http": run_json(http), "baseline": run_json(base), "baseline_1conn": run_json(base1),
                "http_over_baseline": ratio,
                "feed": {"seconds": args.seconds, "posted": feed["posted"], "accepted": feed["accepted"],
                         "entries": feed_total, "max_per_resource_per_pull": worst,
                         "pulls": [p.__dict__ for p in pulls]},
                "checks": checks,
            }, separators=(",", ":")))
    finally:
        if puller is not None:
            puller.close()
        if node is not None:
            try:
                if args.keep:
                    node.stop()
                    print(f"kept database {node.database}")
                else:
                    node.drop()
            except Exception as exc:  # keep going: the database must still be dropped
                print(f"cleanup of {node.name} failed: {exc}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
