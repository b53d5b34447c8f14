"""Shared helpers of the benchmarks in ``bench/``: the 1,000,000-resource catalog, servers, wrk, results.

- ``ensure_catalog()`` makes sure the PostgreSQL database ``cir_million`` holds a migrated national node
  (``cir_node_init --role national --entity-id http://127.0.0.1:8100``) with ``cir_demo --seed 1
  --resources 1000000``; it builds what is missing (``cir_demo`` only adds missing resources) and applies
  pending migrations. It never drops anything.
- ``node_env()`` is the environment of the node's processes: the production settings (``DEBUG=0``) on
  plain loopback HTTP, ``CIR_RATE_LIMITS=off``. The catalog's node keys are encrypted at rest with the
  Fernet key that development settings derive from the development ``SECRET_KEY`` (``identity.keys``);
  ``CATALOG_KEY_ENCRYPTION_KEY`` is that same key, passed explicitly as ``CIR_KEY_ENCRYPTION_KEY``, so a
  catalog built with ``DEBUG=1`` (no key) and one built here read the same way under ``DEBUG=0``.
- ``Server`` starts gunicorn (the CIR app or ``bench/bare_app.py``) on a free port in its own process
  group and stops exactly that group.
- ``run_wrk()`` runs wrk with a Lua script that picks a random request path (or body) from a file per
  request and reports through its ``done()`` hook as one JSON line (requests/s, latency percentiles).
- ``result()`` prints the ``RESULT {json}`` line that ``bench/run`` collects; ``read_results()`` parses them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
CATALOG = "cir_million"
CATALOG_ENTITY_ID = "http://127.0.0.1:8100"
CATALOG_RESOURCES = 1_000_000
CATALOG_SEED = 1
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
DEV_SECRET_KEY = "dev-only-insecure-secret-key"  # config/settings.py, DEBUG=1 without SECRET_KEY
CLK_TCK = os.sysconf("SC_CLK_TCK")


def dev_key_encryption_key(secret_key: str = DEV_SECRET_KEY) -> str:
    """The Fernet key ``identity.keys._fernet`` derives when ``CIR_KEY_ENCRYPTION_KEY`` is unset."""
    derived = hashlib.sha256(("cir-dev-key-encryption:" + secret_key).encode()).digest()
    return base64.urlsafe_b64encode(derived).decode()


CATALOG_KEY_ENCRYPTION_KEY = dev_key_encryption_key()


def db_url(database: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{database}"


def dsn(database: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={database}"


def cores() -> int:
    return os.cpu_count() or 1


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------------
# Environment and management commands


def node_env(database: str = CATALOG, *, debug: bool = False, **extra: str) -> dict[str, str]:
    """Environment for a node process on ``database``: production settings on loopback HTTP."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "DJANGO_SETTINGS"))}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": db_url(database),
        "DEBUG": "1" if debug else "0",
        "SECRET_KEY": env.get("CIR_BENCH_SECRET_KEY") or secrets.token_urlsafe(40),
        "CIR_KEY_ENCRYPTION_KEY": CATALOG_KEY_ENCRYPTION_KEY,
        "CIR_REQUIRE_HTTPS": "0",
        "CIR_RATE_LIMITS": "off",
        "CIR_ENTITY_ID": CATALOG_ENTITY_ID,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("CIR_CACHE_URL", None)
    env.update(extra)
    return env


def manage(database: str, *args: str, timeout: float | None = None, env: dict[str, str] | None = None,
           stream: bool = False) -> dict[str, Any] | str:
    """Run ``manage.py`` on ``database``; with ``--json`` the last stdout line is parsed."""
    command = [PYTHON, "manage.py", *args]
    run_env = env or node_env(database)
    if stream:
        # Progress goes to our stderr; stdout is kept for the JSON line.
        result = subprocess.run(command, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, text=True, timeout=timeout)
        output = result.stdout
    else:
        result = subprocess.run(command, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=timeout)
        output = result.stdout
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} on {database} failed ({result.returncode}):\n"
                         f"{output}\n{'' if stream else result.stderr}")
    if "--json" in args:
        return json.loads(output.strip().splitlines()[-1])
    return output


def shell(database: str, code: str, *, timeout: float | None = 600) -> str:
    return manage(database, "shell", "-v0", "-c", code, timeout=timeout)  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# The catalog


def _admin_query(sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def database_exists(database: str) -> bool:
    return bool(_admin_query("SELECT 1 FROM pg_database WHERE datname = %s", (database,)))


def query(database: str, sql: str, params: tuple | list = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn(database), autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def catalog_state(database: str = CATALOG) -> dict[str, Any]:
    """What the catalog holds: resources, whether the node is initialised, open cir_demo sessions."""
    if not database_exists(database):
        return {"exists": False, "resources": 0, "initialised": False}
    tables = {r[0] for r in query(database, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    if "registry_resource" not in tables or "registry_platform" not in tables:
        return {"exists": True, "resources": 0, "initialised": False}
    resources = query(database, "SELECT count(*) FROM registry_resource")[0][0]
    initialised = bool(query(database, "SELECT 1 FROM registry_platform WHERE is_self"))
    return {"exists": True, "resources": resources, "initialised": initialised}


def ensure_catalog(database: str = CATALOG, *, resources: int = CATALOG_RESOURCES, seed: int = CATALOG_SEED,
                   wait_for_builder: float = 120.0) -> dict[str, Any]:
    """Make ``database`` a migrated national node holding ``cir_demo --seed S --resources N``.

    Builds only what is missing and never drops anything. When the resource count is still growing (another
    process is loading it), waits until it stops growing for ``wait_for_builder`` seconds before finishing
    the job itself with ``cir_demo`` (which only adds the resources that are missing)."""
    import fcntl

    # One builder at a time on this machine (several benchmarks may call this at once).
    with open(Path(tempfile.gettempdir()) / f"cir-catalog-{database}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_catalog(database, resources=resources, seed=seed, wait_for_builder=wait_for_builder)


def _ensure_catalog(database: str, *, resources: int, seed: int, wait_for_builder: float) -> dict[str, Any]:
    state = catalog_state(database)
    if not state["exists"]:
        log(f"catalog: creating database {database}")
        _admin_query(f'CREATE DATABASE "{database}"')
    log(f"catalog: migrating {database}")
    manage(database, "migrate", "--noinput", "-v0", timeout=3600)
    state = catalog_state(database)
    if not state["initialised"]:
        log(f"catalog: cir_node_init --role national --entity-id {CATALOG_ENTITY_ID}")
        manage(database, "cir_node_init", "--role", "national", "--entity-id", CATALOG_ENTITY_ID, "--json")
    count = catalog_state(database)["resources"]
    if count < resources and count > 0:
        # Someone may be loading it right now: wait while the count grows.
        stalled_since, last = time.monotonic(), count
        while count < resources and time.monotonic() - stalled_since < wait_for_builder:
            time.sleep(10)
            count = catalog_state(database)["resources"]
            if count != last:
                log(f"catalog: {count:,} of {resources:,} resources (being loaded elsewhere; waiting)")
                stalled_since, last = time.monotonic(), count
    built: dict[str, Any] | None = None
    if count < resources:
        log(f"catalog: cir_demo --seed {seed} --resources {resources} ({count:,} present; takes minutes)")
        started = time.perf_counter()
        built = manage(database, "cir_demo", "--seed", str(seed), "--resources", str(resources), "--json",
                       timeout=None, stream=True)  # type: ignore[assignment]
        log(f"catalog: built in {time.perf_counter() - started:.0f} s")
        count = catalog_state(database)["resources"]
    return {"database": database, "resources": count, "built": built is not None}


def sample_ucris(database: str, n: int, *, status: str | None = "active", seed: int = 42) -> list[str]:
    """A uniform random sample of UCRIs (deterministic for a seed), in random order; ``status=None``: any."""
    import random

    import psycopg

    with psycopg.connect(dsn(database), autocommit=True) as conn:
        total = conn.execute("SELECT count(*) FROM registry_resource").fetchone()[0]
        percent = min(100.0, max(0.01, 100.0 * n * 2 / max(total, 1)))
        rows = conn.execute(
            f"SELECT ucri FROM registry_resource TABLESAMPLE BERNOULLI ({percent:.4f}) REPEATABLE (%s)"
            " WHERE %s::text IS NULL OR status = %s", (seed, status, status)).fetchall()
    ucris = [r[0] for r in rows]
    random.Random(seed).shuffle(ucris)
    return ucris[:n]


# ---------------------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Server:
    """gunicorn on a free 127.0.0.1 port, in its own process group."""

    name: str
    app: str  # "config.wsgi:application" or "bare_app:application"
    env: dict[str, str]
    workers: int = 4
    threads: int = 1
    ready_path: str = "/healthz"
    pythonpath: str | None = None
    cwd: Path | str = ROOT  # another checkout's root serves that checkout's code (before/after comparisons)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> Server:
        self.log_path = Path(tempfile.gettempdir()) / f"cir-bench-{self.name}-{self.port}.log"
        command = [PYTHON, "-m", "gunicorn", self.app, "--bind", f"127.0.0.1:{self.port}",
                   "--workers", str(self.workers), "--timeout", "120", "--backlog", "2048",
                   "--graceful-timeout", "5"]
        if self.threads > 1:
            command += ["--threads", str(self.threads)]
        if self.pythonpath:
            command += ["--pythonpath", self.pythonpath]
        self.process = subprocess.Popen(command, cwd=self.cwd, env=self.env, stdout=self.log_path.open("w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name}: gunicorn exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                if http_get(self.url + self.ready_path, timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise SystemExit(f"{self.name}: not serving on {self.url} after {timeout} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        """The gunicorn workers: children of the master."""
        if self.process is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    raw = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                rest = raw[raw.rindex(")") + 2:].split()
                if int(rest[1]) == self.process.pid:
                    pids.append(int(entry))
        return sorted(pids)

    def cpu_seconds(self) -> float:
        return process_group_cpu(self.process.pid) if self.process else 0.0

    def warm(self, paths: Iterable[str], *, rounds: int = 2) -> None:
        """Touch every worker (imports, first connection) before measuring."""
        paths = list(paths)
        for _ in range(rounds * self.workers):
            for path in paths[:20]:
                http_get(self.url + path, timeout=30)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cir_server(database: str = CATALOG, *, workers: int = 4, threads: int = 1, **env: str) -> Server:
    return Server("cir", "config.wsgi:application", node_env(database, **env), workers=workers, threads=threads,
                  ready_path="/.well-known/openid-federation")


def bare_server(database: str = CATALOG, *, workers: int = 4, threads: int = 1) -> Server:
    env = node_env(database, BARE_DSN=dsn(database))
    return Server("bare", "bare_app:application", env, workers=workers, threads=threads, pythonpath=str(BENCH))


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
        if int(rest[2]) == pgid:
            total += int(rest[11]) + int(rest[12])
    return total / CLK_TCK


# ---------------------------------------------------------------------------------------------------
# wrk

WRK_LUA = r"""
-- Each request takes a random line of the file given after "--": a path (GET), or "POST <path> <body>".
local lines = {}
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  math.randomseed(os.time() * 1000 + (id or 0) * 7919)
  extra_headers = {}
  if args[2] and args[2] ~= "" then
    local name, value = args[2]:match("^([^:]+):%s*(.*)$")
    extra_headers[name] = value
  end
end

function request()
  local line = lines[math.random(#lines)]
  if line:sub(1, 5) == "POST " then
    local path, body = line:match("^POST (%S+) (.*)$")
    local headers = {["Content-Type"] = "application/json"}
    for k, v in pairs(extra_headers) do headers[k] = v end
    return wrk.format("POST", path, headers, body)
  end
  return wrk.format("GET", line, extra_headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not installed: run bench/run (it installs it) or apt-get install wrk")
    return found


@dataclass
class WrkResult:
    label: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    errors: int  # socket errors and non-2xx/3xx answers
    server_cpu: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_lines(lines: Iterable[str], name: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"cir-bench-{name}-{os.getpid()}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_wrk(url: str, lines_file: Path, *, label: str, seconds: float = 10, connections: int = 8,
            threads: int = 2, header: str = "", server: Server | None = None, timeout_s: int = 10) -> WrkResult:
    script = Path(tempfile.gettempdir()) / f"cir-bench-wrk-{os.getpid()}.lua"
    script.write_text(WRK_LUA, encoding="utf-8")
    command = [wrk_binary(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", f"{timeout_s}s", "--latency", "-s", str(script), url, "--", str(lines_file), header]
    cpu_before = server.cpu_seconds() if server else 0.0
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    cpu = (server.cpu_seconds() - cpu_before) if server else 0.0
    line = next((x for x in completed.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if completed.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    data = json.loads(line[len("WRKJSON "):])
    duration = data["duration_us"] / 1e6
    errors = (data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["status_errors"]
              + data["timeouts"])
    return WrkResult(label=label, requests=data["requests"], seconds=duration,
                     rps=data["requests"] / duration if duration else 0.0,
                     p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000, p99_ms=data["p99_us"] / 1000,
                     mean_ms=data["mean_us"] / 1000, errors=errors, server_cpu=cpu)


# ---------------------------------------------------------------------------------------------------
# Statistics and results


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else 0.0


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    """Run ``fn`` n times; seconds of each run."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def result(benchmark: str, *, figure: float, unit: str, baseline: float, baseline_label: str, ratio: float,
           target: str, met: bool, **extra: Any) -> dict[str, Any]:
    """Print the ``RESULT`` line bench/run collects, and return it."""
    record = {"benchmark": benchmark, "figure": round(figure, 4), "unit": unit, "baseline": round(baseline, 4),
              "baseline_label": baseline_label, "ratio": round(ratio, 4), "target": target, "met": bool(met),
              "extra": extra}
    print("RESULT " + json.dumps(record, separators=(",", ":"), default=str), flush=True)
    return record


def read_results(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        if line.startswith("RESULT "):
            try:
                found.append(json.loads(line[len("RESULT "):]))
            except ValueError:
                continue
    return found


def machine_summary() -> str:
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{cores()} cores (os.cpu_count()), load average {load}, python {sys.version.split()[0]}"


# ---------------------------------------------------------------------------------------------------
# Profiling (optional: py-spy must be installed in the interpreter's environment)


def py_spy_record(pids: list[int], seconds: float, output_prefix: str) -> list[Path]:
    """Start ``py-spy record`` on each pid for ``seconds`` (in the background); returns the output paths."""
    spy = shutil.which("py-spy") or str(Path(PYTHON).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    outputs = []
    for pid in pids:
        out = Path(f"{output_prefix}-{pid}.txt")
        subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format", "raw",
                          "--rate", "200", "--output", str(out), "--nonblocking"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        outputs.append(out)
    return outputs


def summarise_collapsed(paths: list[Path], top: int = 25) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed ("raw") stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not count_text.isdigit():
                continue
            count = int(count_text)
            total += count
            frames = stack.split(";")
            for frame in set(frames):
                inclusive[frame] = inclusive.get(frame, 0) + count
            own[frames[-1]] = own.get(frames[-1], 0) + count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; inclusive (top {top}):"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    lines.append(f"self (top {top}):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# bench/run: results from every script's output

# Scripts that print a JSON line but no RESULT line: how to read one from the JSON.
def _from_json(script: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    if script == "availability.py" and "http_over_baseline" in data:
        ratio = data["http_over_baseline"]
        return [{"benchmark": "availability", "figure": data["http"]["rate"], "unit": "reports/s",
                 "baseline": data["baseline"]["rate"], "baseline_label": "bare psycopg upsert, same connections",
                 "ratio": ratio, "target": ">= 0.30", "met": ratio >= 0.30,
                 "extra": {"http_p99_ms": data["http"]["p99_ms"]}}]
    if script == "federation_sync.py" and "sync_over_copy" in data:
        ratio = data["sync_over_copy"] or 0.0
        first = data["sync"][0]
        rss = data.get("peak_rss_mb") or first["max_rss_mb"]
        return [{"benchmark": "federation_sync", "figure": first["rate"], "unit": "changes/s",
                 "baseline": data["copy"]["rate"], "baseline_label": "COPY of the same rows", "ratio": ratio,
                 "target": ">= 0.20, peak RSS < 300 MB", "met": ratio >= 0.20 and rss < 300,
                 "extra": {"peak_rss_mb": rss}}]
    return []


def results_of(script: str, text: str) -> list[dict[str, Any]]:
    found = read_results(text)
    if found:
        return found
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return _from_json(script, json.loads(line))
            except (ValueError, KeyError, TypeError, IndexError):
                return []
    return []


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 1 else f"{value:.2f}"


def summarise(log_dir: Path, statuses: dict[str, int]) -> int:
    """One line per benchmark from the logs of a bench/run; returns the number of missed targets."""
    rows = []
    for script, status in statuses.items():
        log_file = log_dir / f"{Path(script).stem}.log"
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        found = results_of(script, text)
        if not found:
            rows.append((Path(script).stem, f"no result (exit {status}); see {log_file}", False))
        for r in found:
            line = (f"{_number(r['figure'])} {r['unit']}  vs  {_number(r['baseline'])} "
                    f"({r['baseline_label']})  ratio {r['ratio']:.3f}  target {r['target']}")
            if status != 0:
                line += f"  (script exit {status})"
            rows.append((r["benchmark"], line, bool(r["met"]) and status == 0))
    width = max((len(name) for name, _, _ in rows), default=10)
    print()
    print(f"benchmarks ({machine_summary()}; logs in {log_dir}):")
    for name, line, met in rows:
        print(f"  {name:<{width}}  {'MET   ' if met else 'MISSED'}  {line}")
    return sum(1 for _, _, met in rows if not met)
