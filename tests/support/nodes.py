"""Whole CIR nodes as real processes for federation tests: each node has its own PostgreSQL database
(cloned from a migrated template), a gunicorn server on a 127.0.0.1 port, and optionally a Celery
worker on its own Redis database. Nodes talk to each other over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

from .processes import ROOT, child_env, wait_for

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TEMPLATE = "cir_node_template"
_template_ready = False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


def _db_url(name: str) -> str:
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def _log_dir() -> Path:
    """The test run's own log directory (config/testing.py scans it for secrets at the end)."""
    logs = Path(os.environ.get("CIR_TEST_LOG_DIR") or ROOT / "test-output" / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    return logs


def _migration_digest() -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def ensure_template() -> str:
    """A migrated database to clone per node (migrating each node from scratch is slow)."""
    global _template_ready
    name = f"{TEMPLATE}_{_migration_digest()}"
    if _template_ready:
        return name
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    if not exists:
        building = f"{name}_building_{uuid.uuid4().hex[:6]}"
        _admin(f'CREATE DATABASE "{building}"')
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True,
                       env=child_env(DATABASE_URL=_db_url(building)))
        try:
            _admin(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        except psycopg.errors.DuplicateDatabase:
            _admin(f'DROP DATABASE "{building}"')  # another test process won the race
    _template_ready = True
    return name


@dataclass
class Node:
    name: str
    port: int
    database: str
    redis_db: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = child_env(DATABASE_URL=_db_url(self.database), CIR_ENTITY_ID=self.url, CIR_RATE_LIMITS="off",
                        ALLOWED_HOSTS="127.0.0.1,localhost")
        if self.redis_db is not None:
            env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:6379/{self.redis_db}"
            env["CIR_CELERY_QUEUE"] = self.database  # unique: concurrent runs never take each other's tasks
        env.update(self.extra_env)
        return env

    def manage(self, *args: str, check: bool = True, timeout: float = 300) -> dict[str, Any] | str:
        """Run a management command on this node; ``--json`` output is parsed."""
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        with (_log_dir() / f"cir-{self.name}-manage-{self.port}.log").open("a") as log:
            log.write(result.stderr)  # commands log to stderr: kept with the run's logs (scanned for secrets)
        if check and result.returncode != 0:
            raise AssertionError(f"{self.name}: manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        if "--json" in args and result.returncode == 0:
            return json.loads(result.stdout.strip().splitlines()[-1])
        return result.stdout + result.stderr

    def shell(self, code: str) -> str:
        return self.manage("shell", "-v0", "-c", code)

    def _spawn(self, command: list[str], label: str) -> subprocess.Popen:
        log = _log_dir() / f"cir-{self.name}-{label}-{self.port}.log"
        self.logs.append(log)
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def start_server(self) -> None:
        self._spawn([sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{self.port}",
                     "--workers", "2", "--threads", "4", "--timeout", "60"], "web")

        def up() -> bool:
            try:
                return requests.get(f"{self.url}/.well-known/openid-federation", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for(up, timeout=60, what=f"{self.name} to serve on {self.url}")

    def start_worker(self) -> subprocess.Popen:
        assert self.redis_db is not None, "a worker needs a broker"
        return self._spawn([sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
                            "-Q", self.database,
                            "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"],
                           "worker")

    def kill(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()

    def drop(self) -> None:
        self.stop()
        _admin(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
                         for p in self.logs if p.exists())

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)


def create_node(name: str, *, role: str, code: str | None = None, redis_db: int | None = None,
                extra_env: dict[str, str] | None = None) -> Node:
    template = ensure_template()
    database = f"cir_node_{name}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
    node = Node(name=name, port=free_port(), database=database, redis_db=redis_db, extra_env=extra_env or {})
    args = ["cir_node_init", "--role", role, "--entity-id", node.url, "--json"]
    if code:
        args[3:3] = ["--code", code]
    node.manage(*args)
    return node


def join(subordinate: Node, superior: Node, *, anchor: Node, prefix: str) -> None:
    """The contract's join: on the subordinate pin the anchor and set the superior; then on the
    superior enroll the subordinate."""
    subordinate.manage("cir_trust_anchor_add", "--entity-id", anchor.url, "--pin-fetched", "--json")
    subordinate.manage("cir_superior_set", "--entity-id", superior.url, "--json")
    superior.manage("cir_subordinate_add", "--entity-id", subordinate.url, "--prefix", prefix, "--json")


def eventually(predicate, *, timeout: float = 90, what: str = "condition", nodes: list[Node] = ()) -> None:
    try:
        wait_for(predicate, timeout=timeout, interval=0.5, what=what)
    except AssertionError as exc:
        raise AssertionError(str(exc) + "\n" + "\n".join(n.log_tail() for n in nodes)) from None


def resolve(node: Node, ucri: str) -> requests.Response:
    return node.get(f"/api/v1/resolve/{ucri}")


def now() -> float:
    return time.time()
