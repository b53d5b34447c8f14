#!/usr/bin/env python
"""Benchmark: access-token issuance (CONTRACT §6) and handoff issuance (CONTRACT §7) per second.

CIR runs under gunicorn (``--workers`` sync workers, the production settings ``DEBUG=0`` on loopback HTTP,
``CIR_RATE_LIMITS=off``) on the catalog database (``cir_million`` by default, see ``bench/common.py``).
Load comes from ``wrk`` in its own process. Every request carries fresh single-use material, generated
before the timed window (outside the measurement) and written one request per line, one file per wrk
thread, each line used once:

- ``POST /oauth/token``: a ``private_key_jwt`` client assertion with its own ``jti``;
- ``POST /api/v1/handoffs``: one access token per phase, and a DPoP proof per request (own ``jti``,
  ``htm``, ``htu``, ``ath``), made just before the phase (a proof's ``iat`` is good for 60 s).

Baseline, same run, same concurrency: ``--bare-procs`` processes (default: the gunicorn worker count),
each with one psycopg connection, doing the same cryptography and the same database work with PyJWT,
``cryptography`` and psycopg, and nothing else:

- token: parse the form, verify the assertion's ES256 signature with the client's public key (loaded once)
  and its claims, insert the ``jti`` into a copy of CIR's replay table (``INSERT ... ON CONFLICT DO
  NOTHING``; with ``--cache redis`` a Redis ``SET NX EX`` instead, like CIR's cache), sign an ``at+jwt`` with the node's
  access-token key (decrypted once at start);
- handoff: verify the bearer token with the node's access-token public key, verify the DPoP proof with
  the JWK in its header (``htm``/``htu``/``ath``/``iat``) and take its thumbprint, parse the body and hash
  the RFC 8785 canonical job, insert the proof's ``jti`` into the replay table, look the resource and its
  provider up by UCRI (status, downtimes, credential status: one query), then in one transaction insert
  the handoff row, sign the ``handoff+jwt`` ticket, and append a hash-chained audit row (counter row
  lock, previous hash, RFC 8785 hash, insert), commit.

The baseline writes into copies of the real tables (``CREATE TABLE bench_tokens_* (LIKE ... INCLUDING
ALL)``: same columns, indexes and constraints) in the same database, dropped at the end, so the node's
own audit chain is not touched by the baseline. Phases alternate (CIR, bare, bare, CIR, ...) for
``--rounds`` rounds; medians are reported. Target (issue 9): CIR >= 30% of the bare rate.

Set-up on the catalog database (idempotent, a few rows): one provider ``86.TKB1`` with a credential
(``identity.credentials.onboard``), a site and one resource with a Slurm endpoint, and a scheduler client
``bench-scheduler`` (``cir_client_add``, a new key each run, scopes ``handoff:request resources:read``).
The run leaves its handoff rows and their audit entries, like any other issuance.

Checks printed as [ok]/[FAIL] (exit status 1 on a failure): every timed request answered 2xx, no request
line was used twice, the first assertion of the run is refused as a replay at the end (so the replay cache
kept it through the whole run), and the node's audit chain verifies.

    .venv/bin/python bench/tokens.py [--seconds 10] [--rounds 3] [--workers 4] [--cache db|redis]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import jwt
import psycopg
import rfc8785
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm

from identity import crypto

CLIENT_ID = "bench-scheduler"
PROVIDER_CODE = "TKB1"
LOCAL_ID = "bench-handoff"
ENDPOINT = "https://slurm.tkb1.bench.example/slurmrestd/jobs"
JOB = {"script": "#!/bin/bash\nsrun python train.py --epochs 3", "nodes": 2, "gpus_per_node": 8,
       "walltime": 3600, "partition": "a100"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BARE_TABLES = {"replay": "identity_seenjti", "handoff": "scheduling_handoff", "audit": "core_auditentry",
               "counter": "core_counter"}
LEEWAY = 60
REDIS_DB_DEFAULT = 15  # tests/flows use 0, 6, 9 and 11-14 as Celery brokers

SETUP = """
import json
from django.db import transaction
from django.utils import timezone
from identity import credentials
from registry import identifiers, services
from registry.models import Provider, Resource, Site
node = services.this_node()
prefix = identifiers.child_prefix(node.prefix, {code!r})
provider = Provider.objects.filter(prefix=prefix).first()
if provider is None:
    provider = credentials.onboard(name="Handoff Bench Provider", uscc={uscc!r}, code={code!r},
                                   actor="command:bench").provider
if provider.effective_credential_status() != "valid":
    current = credentials.current(provider)
    credentials.issue(provider=provider, key=current.key, actor="command:bench")
    provider.refresh_from_db()
site = Site.objects.filter(provider=provider, name="Bench DC").first() or services.site_create(
    provider=provider, data=dict(name="Bench DC", province="52", pue=1.2, green_ratio=0.5, rack_availability=0.3))
resource = Resource.objects.filter(provider=provider, local_id={local_id!r}).first()
if resource is None:
    resource = services.resource_create(provider=provider, data=dict(local_id={local_id!r}, name="Bench A100 pool",
        kind="intelligent", site_id=str(site.id), accelerator="GPU", accelerator_model="A100 SXM 80GB",
        accelerator_count=64, node_count=8, price_per_hour="8.5", price_unit="card",
        endpoints=[dict(type="slurm", url={endpoint!r})]))
print(json.dumps({{"entity_id": node.entity_id, "prefix": provider.prefix, "ucri": resource.ucri,
                  "credential": provider.effective_credential_status(), "status": resource.status}}))
"""

AUDIT_CHECK = """
import json
from core import audit
from core.models import AuditEntry
print(json.dumps({"broken_at": audit.verify_chain(), "entries": AuditEntry.objects.count()}))
"""

# One request per line, each line used once; one file per wrk thread. Reports through done() as JSON.
WRK_LUA = r"""
local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  dir, kind = args[1], args[2]
  lines, n, i, reused = {}, 0, 0, 0
  for line in io.lines(dir .. "/lines-" .. tid .. ".txt") do n = n + 1; lines[n] = line end
  if kind == "handoff" then
    local f = io.open(dir .. "/token.txt"); token = f:read("*l"); f:close()
    f = io.open(dir .. "/body.json"); body = f:read("*a"); f:close()
    path = args[3]
  end
end

function request()
  i = i + 1
  if i > n then reused = reused + 1; i = 1 end
  if kind == "token" then
    return wrk.format("POST", "/oauth/token", {["Content-Type"] = "application/x-www-form-urlencoded"}, lines[i])
  end
  return wrk.format("POST", path, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token,
                                   ["DPoP"] = lines[i]}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local total_reused = 0
  for _, t in ipairs(threads) do total_reused = total_reused + (t:get("reused") or 0) end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"reused":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, total_reused))
end
"""


# ---------------------------------------------------------------------------------------------------
# Fast ES256 compact JWS for generating load (outside the timed window)

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: dict[str, Any], claims: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> str:
    signing_input = (b64(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64(json.dumps(claims, separators=(",", ":")).encode()))
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@dataclass
class Setup:
    entity_id: str
    ucri: str
    prefix: str
    client_key: ec.EllipticCurvePrivateKey
    client_kid: str
    dpop_key: ec.EllipticCurvePrivateKey
    dpop_jwk: dict[str, Any]

    @property
    def token_url(self) -> str:
        return self.entity_id + "/oauth/token"


def assertion_bodies(setup: Setup, n: int) -> list[str]:
    now = int(time.time())
    header = {"alg": "ES256", "typ": "JWT", "kid": setup.client_kid}
    out = []
    for _ in range(n):
        claims = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": setup.token_url, "iat": now, "exp": now + 600,
                  "jti": uuid.uuid4().hex}
        out.append(urllib.parse.urlencode({"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                                           "client_assertion": jws(header, claims, setup.client_key),
                                           "scope": "handoff:request"}))
    return out


def dpop_proofs(setup: Setup, n: int, htu: str, access_token: str) -> list[str]:
    now = int(time.time())
    header = {"alg": "ES256", "typ": "dpop+jwt", "jwk": setup.dpop_jwk}
    ath = crypto.sha256_b64url(access_token)
    return [jws(header, {"jti": uuid.uuid4().hex, "htm": "POST", "htu": htu, "iat": now, "ath": ath}, setup.dpop_key)
            for _ in range(n)]


# ---------------------------------------------------------------------------------------------------
# Set-up

def valid_uscc(n: int) -> str:
    from stdnum.cn import uscc

    body = f"9152{n:06d}MA{n % 10000:04d}"[:17].ljust(17, "0")
    return body + uscc.calc_check_digit(body)


def prepare(database: str) -> Setup:
    code = SETUP.format(code=PROVIDER_CODE, uscc=valid_uscc(880001), local_id=LOCAL_ID, endpoint=ENDPOINT)
    info = json.loads(common.shell(database, code).strip().splitlines()[-1])
    if info["credential"] != "valid" or info["status"] != "active":
        raise SystemExit(f"bench provider not usable: {info}")
    client_key = ec.generate_private_key(ec.SECP256R1())
    public = crypto.public_jwk(client_key)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(public, handle)
    try:
        common.manage(database, "cir_client_add", "--client-id", CLIENT_ID, "--jwk", handle.name, "--scope",
                      "handoff:request resources:read", "--json")
    finally:
        os.unlink(handle.name)
    dpop_key = ec.generate_private_key(ec.SECP256R1())
    return Setup(entity_id=info["entity_id"], ucri=info["ucri"], prefix=info["prefix"], client_key=client_key,
                 client_kid=public["kid"], dpop_key=dpop_key, dpop_jwk=crypto.public_jwk(dpop_key))


def http_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fetch_access_token(server: common.Server, setup: Setup) -> str:
    status, body = http_post(server.url + "/oauth/token", assertion_bodies(setup, 1)[0].encode(),
                             {"Content-Type": "application/x-www-form-urlencoded"})
    if status != 200:
        raise SystemExit(f"token request failed: {status} {body[:300]!r}\n{server.log_tail()}")
    return json.loads(body)["access_token"]


# ---------------------------------------------------------------------------------------------------
# CIR over HTTP (wrk)

@dataclass
class Phase:
    label: str
    ops: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    reused: int = 0
    server_cpu_ms_per_op: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def write_thread_files(directory: Path, lines: list[str], threads: int) -> None:
    for t in range(threads):
        (directory / f"lines-{t}.txt").write_text("\n".join(lines[t::threads]) + "\n", encoding="utf-8")


def run_wrk(server: common.Server, directory: Path, kind: str, *, seconds: float, connections: int, threads: int,
            label: str) -> Phase:
    script = directory / "load.lua"
    script.write_text(WRK_LUA, encoding="utf-8")
    command = [common.wrk_binary(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
               "--timeout", "20s", "--latency", "-s", str(script), server.url, "--", str(directory), kind,
               "/api/v1/handoffs"]
    cpu_before = server.cpu_seconds()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    cpu = server.cpu_seconds() - cpu_before
    line = next((x for x in completed.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if completed.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    data = json.loads(line[len("WRKJSON "):])
    duration = data["duration_us"] / 1e6
    errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    ops = data["requests"]
    return Phase(label=label, ops=ops, seconds=duration, rate=ops / duration if duration else 0.0,
                 p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=errors, reused=data["reused"],
                 server_cpu_ms_per_op=1000 * cpu / ops if ops else None)


def cir_token_phase(server: common.Server, setup: Setup, args: argparse.Namespace, label: str) -> Phase:
    with tempfile.TemporaryDirectory(prefix="cir-bench-tokens-") as tmp:
        lines = assertion_bodies(setup, int(args.max_rate * args.seconds))
        write_thread_files(Path(tmp), lines, args.wrk_threads)
        return run_wrk(server, Path(tmp), "token", seconds=args.seconds, connections=args.connections,
                       threads=args.wrk_threads, label=label)


def handoff_body(setup: Setup) -> str:
    return json.dumps({"ucri": setup.ucri, "job": JOB}, separators=(",", ":"))


def cir_handoff_phase(server: common.Server, setup: Setup, args: argparse.Namespace, label: str) -> Phase:
    token = fetch_access_token(server, setup)
    with tempfile.TemporaryDirectory(prefix="cir-bench-handoffs-") as tmp:
        directory = Path(tmp)
        (directory / "token.txt").write_text(token + "\n")
        (directory / "body.json").write_text(handoff_body(setup))
        proofs = dpop_proofs(setup, int(args.max_rate * args.seconds), server.url + "/api/v1/handoffs", token)
        write_thread_files(directory, proofs, args.wrk_threads)
        return run_wrk(server, directory, "handoff", seconds=args.seconds, connections=args.connections,
                       threads=args.wrk_threads, label=label)


# ---------------------------------------------------------------------------------------------------
# The bare baseline: same cryptography and database work, psycopg, no framework

@dataclass
class BareContext:
    dsn: str
    cache: str  # "db" | "redis"
    redis_url: str
    entity_id: str
    token_url: str
    client_public_jwk: dict[str, Any]
    at_private_pem: bytes
    at_kid: str
    handoff_private_pem: bytes
    handoff_kid: str
    htu: str
    tables: dict[str, str]


def node_private_keys(database: str) -> dict[str, tuple[str, bytes]]:
    """The node's active signing key per purpose, decrypted once (as a bare service would at start)."""
    fernet = Fernet(common.CATALOG_KEY_ENCRYPTION_KEY.encode())
    rows = common.query(database, "SELECT DISTINCT ON (purpose) purpose, kid, private_key_encrypted FROM "
                                  "identity_nodekey WHERE activates_at <= now() ORDER BY purpose, activates_at DESC")
    return {purpose: (kid, fernet.decrypt(bytes(blob))) for purpose, kid, blob in rows}


class Bare:
    """One baseline process: its own connection, keys loaded once."""

    def __init__(self, ctx: BareContext) -> None:
        self.ctx = ctx
        self.conn = psycopg.connect(ctx.dsn, autocommit=True)
        self.client_key = ECAlgorithm.from_jwk(json.dumps(ctx.client_public_jwk))
        self.at_key = serialization.load_pem_private_key(ctx.at_private_pem, password=None)
        self.at_public = self.at_key.public_key()
        self.handoff_key = serialization.load_pem_private_key(ctx.handoff_private_pem, password=None)
        self.redis = None
        if ctx.cache == "redis":
            import redis

            self.redis = redis.Redis.from_url(ctx.redis_url)
        t = ctx.tables
        self.sql_replay = (f"INSERT INTO {t['replay']} (digest, expires_at) VALUES (%s, %s) "
                           "ON CONFLICT (digest) DO NOTHING")
        self.sql_resource = (
            "SELECT r.id, r.status, r.endpoints, p.prefix, p.credential_status, p.credential_expires_at "
            "FROM registry_resource r JOIN registry_provider p ON p.id = r.provider_id WHERE r.ucri = %s "
            "AND NOT EXISTS (SELECT 1 FROM registry_downtime d WHERE (d.resource_id = r.id OR d.site_id = r.site_id)"
            " AND d.start <= now() AND d.\"end\" > now())")
        self.sql_handoff = (f"INSERT INTO {t['handoff']} (id, ucri, provider_prefix, scheduler, endpoint, job_sha256,"
                            " jkt, ticket_jti, issued_at, expires_at, status, reason) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 'issued', '')")
        self.sql_take = f"UPDATE {t['counter']} SET last = last + 1 WHERE name = 'audit' RETURNING last"
        self.sql_prev = f"SELECT hash FROM {t['audit']} WHERE seq = %s"
        self.sql_audit = (f"INSERT INTO {t['audit']} (seq, at, actor, action, target_type, target_key, data, "
                          "prev_hash, hash) VALUES (%s, %s, %s, 'handoff.issued', 'handoff', %s, %s, %s, %s)")

    def remember_once(self, kind: str, jti: str, expires_at: int) -> bool:
        digest = hashlib.sha256(f"{kind}\x00{jti}".encode()).hexdigest()
        ttl = max(1, expires_at - int(time.time()))
        if self.redis is not None:
            return bool(self.redis.set(f"bench:jti:{digest}", 1, nx=True, ex=ttl))
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl)
        return self.conn.execute(self.sql_replay, (digest, expires)).rowcount == 1

    def token(self, body: str) -> bytes:
        form = dict(urllib.parse.parse_qsl(body))
        assert form["grant_type"] == "client_credentials" and form["client_assertion_type"] == ASSERTION_TYPE
        claims = jwt.decode(form["client_assertion"], self.client_key, algorithms=["ES256"],
                            audience=[self.ctx.token_url, self.ctx.entity_id], issuer=CLIENT_ID, leeway=LEEWAY,
                            options={"require": ["exp", "iat", "jti", "sub"]})
        assert claims["sub"] == CLIENT_ID and claims["exp"] - claims["iat"] <= 3600
        if not self.remember_once("client_assertion", claims["jti"], claims["exp"] + LEEWAY):
            raise RuntimeError("replayed assertion")
        now = int(time.time())
        scope = form.get("scope") or "handoff:request resources:read"
        access = jwt.encode({"iss": self.ctx.entity_id, "sub": CLIENT_ID, "client_id": CLIENT_ID,
                             "aud": self.ctx.entity_id, "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex,
                             "scope": scope}, self.at_key, algorithm="ES256",
                            headers={"kid": self.ctx.at_kid, "typ": "at+jwt"})
        return json.dumps({"access_token": access, "token_type": "Bearer", "expires_in": 300,
                           "scope": scope}).encode()

    def handoff(self, access_token: str, proof: str, body: str) -> bytes:
        claims = jwt.decode(access_token, self.at_public, algorithms=["ES256"], audience=self.ctx.entity_id,
                            issuer=self.ctx.entity_id, leeway=LEEWAY)
        client_id = claims["client_id"]
        assert "handoff:request" in claims["scope"].split()
        header = jwt.get_unverified_header(proof)
        assert header.get("typ") == "dpop+jwt"
        jwk = header["jwk"]
        proof_claims = jwt.decode(proof, ECAlgorithm.from_jwk(json.dumps(jwk)), algorithms=["ES256"])
        now = int(time.time())
        if (proof_claims["htm"] != "POST" or proof_claims["htu"] != self.ctx.htu or abs(now - proof_claims["iat"]) > 60
                or proof_claims["ath"] != crypto.b64url(hashlib.sha256(access_token.encode()).digest())):
            raise RuntimeError("proof does not match")
        members = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
        jkt = crypto.b64url(hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
                            .digest())
        request = json.loads(body)
        job_sha256 = hashlib.sha256(rfc8785.dumps(request["job"])).hexdigest()
        if not self.remember_once("dpop_proof", proof_claims["jti"], now + 120):
            raise RuntimeError("replayed proof")
        row = self.conn.execute(self.sql_resource, (request["ucri"],)).fetchone()
        if row is None or row[1] != "active" or row[4] != "valid":
            raise RuntimeError(f"resource not available: {row}")
        _, _, endpoints, prefix, _, _ = row
        endpoint = endpoints[0]["url"]
        issued = dt.datetime.now(dt.UTC)
        handoff_id, ticket_jti = uuid.uuid4(), uuid.uuid4().hex
        iat = int(issued.timestamp())
        with self.conn.transaction():
            self.conn.execute(self.sql_handoff, (handoff_id, request["ucri"], prefix, client_id, endpoint, job_sha256,
                                                 jkt, ticket_jti, issued, issued + dt.timedelta(seconds=120)))
            ticket = jwt.encode({"iss": self.ctx.entity_id, "aud": prefix, "sub": client_id,
                                 "handoff_id": str(handoff_id), "ucri": request["ucri"], "endpoint": endpoint,
                                 "job_sha256": job_sha256, "cnf": {"jkt": jkt}, "jti": ticket_jti, "iat": iat,
                                 "exp": iat + 120}, self.handoff_key, algorithm="ES256",
                                headers={"kid": self.ctx.handoff_kid, "typ": "handoff+jwt"})
            seq = self.conn.execute(self.sql_take).fetchone()[0]
            prev = self.conn.execute(self.sql_prev, (seq - 1,)).fetchone()
            prev_hash = prev[0] if prev else "0" * 64
            at = dt.datetime.now(dt.UTC)
            data = {"ucri": request["ucri"], "endpoint": endpoint, "job_sha256": job_sha256, "jkt": jkt}
            actor = f"client:{client_id}"
            content = {"seq": seq, "at": at.isoformat(timespec="microseconds").replace("+00:00", "Z"),
                       "actor": actor, "action": "handoff.issued", "target_type": "handoff",
                       "target_key": str(handoff_id), "data": data, "prev_hash": prev_hash}
            entry_hash = hashlib.sha256(rfc8785.dumps(content)).hexdigest()
            self.conn.execute(self.sql_audit, (seq, at, actor, str(handoff_id), json.dumps(data), prev_hash,
                                               entry_hash))
        return json.dumps({"id": str(handoff_id), "ticket": ticket, "provider_endpoint": endpoint,
                           "expires_at": (issued + dt.timedelta(seconds=120)).isoformat(), "status": "issued"}).encode()


def _bare_child(ctx: BareContext, kind: str, items: list[Any], deadline_s: float, ready, go, results) -> None:
    try:
        bare = Bare(ctx)
        op = bare.token if kind == "token" else (lambda item: bare.handoff(*item))
        op(items[0])  # warm: first statement of each kind on this connection
        ready.put(True)
        go.wait()
        started = time.time()
        cpu_started = time.process_time()
        latencies = []
        done = 0
        for item in items[1:]:
            t0 = time.perf_counter()
            op(item)
            latencies.append(time.perf_counter() - t0)
            done += 1
            if time.time() - started > deadline_s:
                break
        results.put({"ops": done, "started": started, "ended": time.time(), "latencies": latencies,
                     "cpu": time.process_time() - cpu_started})
    except BaseException as exc:  # report, never hang the parent
        ready.put(False)
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def run_bare(ctx: BareContext, kind: str, per_process: list[list[Any]], seconds: float, label: str) -> Phase:
    mp = multiprocessing.get_context("fork")
    ready, results, go = mp.Queue(), mp.Queue(), mp.Event()
    processes = [mp.Process(target=_bare_child, args=(ctx, kind, items, seconds, ready, go, results))
                 for items in per_process]
    for process in processes:
        process.start()
    for _ in processes:
        if not ready.get(timeout=120):
            break
    released = time.time()
    go.set()
    outcomes = [results.get(timeout=seconds + 300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    failures = [o["error"] for o in outcomes if "error" in o]
    if failures:
        raise SystemExit(f"bare {kind} failed: {failures[0]}")
    ops = sum(o["ops"] for o in outcomes)
    elapsed = max(o["ended"] for o in outcomes) - released
    latencies = [x for o in outcomes for x in o["latencies"]]
    cpu = sum(o["cpu"] for o in outcomes)
    return Phase(label=label, ops=ops, seconds=elapsed, rate=ops / elapsed if elapsed else 0.0,
                 p50_ms=1000 * common.percentile(latencies, 50), p99_ms=1000 * common.percentile(latencies, 99),
                 server_cpu_ms_per_op=1000 * cpu / ops if ops else None)


def bare_token_phase(ctx: BareContext, setup: Setup, args: argparse.Namespace, label: str) -> Phase:
    n = int(args.bare_max_rate * args.seconds / args.bare_procs) + 1
    per = [assertion_bodies(setup, n) for _ in range(args.bare_procs)]
    return run_bare(ctx, "token", per, args.seconds, label)


def bare_handoff_phase(ctx: BareContext, server: common.Server, setup: Setup, args: argparse.Namespace,
                       label: str) -> Phase:
    token = fetch_access_token(server, setup)
    body = handoff_body(setup)
    n = int(args.bare_max_rate * args.seconds / args.bare_procs) + 1
    per = [[(token, proof, body) for proof in dpop_proofs(setup, n, ctx.htu, token)] for _ in range(args.bare_procs)]
    return run_bare(ctx, "handoff", per, args.seconds, label)


def create_bare_tables(database: str, suffix: str) -> dict[str, str]:
    names = {kind: f"bench_tokens_{kind}_{suffix}" for kind in BARE_TABLES}
    with psycopg.connect(common.dsn(database), autocommit=True) as conn:
        for kind, source in BARE_TABLES.items():
            conn.execute(f"CREATE TABLE {names[kind]} (LIKE {source} INCLUDING ALL)")
        conn.execute(f"INSERT INTO {names['counter']} (name, last) VALUES ('audit', 0)")
    return names


def drop_bare_tables(database: str, names: dict[str, str]) -> None:
    with psycopg.connect(common.dsn(database), autocommit=True) as conn:
        for name in names.values():
            conn.execute(f"DROP TABLE IF EXISTS {name}")


# ---------------------------------------------------------------------------------------------------

def summarise(kind: str, cir: list[Phase], bare: list[Phase], args: argparse.Namespace) -> dict[str, Any]:
    figure = common.median(p.rate for p in cir)
    baseline = common.median(p.rate for p in bare)
    # Each round's two phases ran back to back: the median of the per-round ratios follows the machine's
    # changing load better than the ratio of the medians (both are printed).
    ratios = [c.rate / b.rate for c, b in zip(cir, bare, strict=True) if b.rate]
    ratio = common.median(ratios)
    return common.result(
        f"tokens.{kind}", figure=figure, unit="requests/s", baseline=baseline,
        baseline_label=f"bare PyJWT + psycopg, {args.bare_procs} processes, same crypto and writes",
        ratio=ratio, target=">= 0.30", met=ratio >= 0.30,
        cir_rates=[round(p.rate, 1) for p in cir], bare_rates=[round(p.rate, 1) for p in bare],
        round_ratios=[round(r, 3) for r in ratios], ratio_of_medians=round(figure / baseline, 4) if baseline else 0,
        cir_p50_ms=round(common.median(p.p50_ms for p in cir), 2),
        cir_p99_ms=round(common.median(p.p99_ms for p in cir), 2),
        bare_p50_ms=round(common.median(p.p50_ms for p in bare), 2),
        bare_p99_ms=round(common.median(p.p99_ms for p in bare), 2),
        cir_server_cpu_ms_per_request=round(common.median(p.server_cpu_ms_per_op or 0 for p in cir), 3),
        bare_cpu_ms_per_op=round(common.median(p.server_cpu_ms_per_op or 0 for p in bare), 3),
        workers=args.workers, threads=args.threads, connections=args.connections, bare_processes=args.bare_procs,
        cache=args.cache, seconds=args.seconds, rounds=args.rounds, cores=common.cores(), database=args.database)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default=common.CATALOG)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--bare-procs", type=int, default=None, help="baseline processes (default: --workers)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed phase")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", choices=("db", "redis"), default="db",
                        help="CIR_CACHE_URL: unset (the database, the default) or redis://127.0.0.1:6379/N")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB_DEFAULT)
    parser.add_argument("--max-rate", type=float, default=2500, help="CIR request lines made per second of a phase")
    parser.add_argument("--bare-max-rate", type=float, default=6000, help="baseline inputs made per second")
    parser.add_argument("--only", choices=("token", "handoff"), help="run one of the two benchmarks")
    parser.add_argument("--profile", action="store_true",
                        help="after the rounds, py-spy the gunicorn workers during one more CIR phase of each kind")
    parser.add_argument("--no-catalog", action="store_true", help="do not call ensure_catalog() (any node database)")
    args = parser.parse_args()
    args.bare_procs = args.bare_procs or args.workers

    common.log(f"machine: {common.machine_summary()}")
    if not args.no_catalog:
        common.log(f"catalog: {common.ensure_catalog(args.database)}")
    setup = prepare(args.database)
    common.log(f"set-up: node {setup.entity_id}, resource {setup.ucri} of {setup.prefix}, client {CLIENT_ID}")
    extra_env: dict[str, str] = {}
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    if args.cache == "redis":
        extra_env["CIR_CACHE_URL"] = redis_url
    server = common.cir_server(args.database, workers=args.workers, threads=args.threads, **extra_env)
    tables: dict[str, str] = {}
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(f"[{'ok' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            failures.append(what)

    try:
        server.start()
        common.log(f"CIR: gunicorn {args.workers} workers x {args.threads} threads on {server.url}, "
                   f"cache {'redis ' + redis_url if args.cache == 'redis' else 'database (CIR_CACHE_URL unset)'}")
        first = assertion_bodies(setup, 1)[0]
        status, _ = http_post(server.url + "/oauth/token", first.encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
        check(status == 200, f"first token request answered 200 ({status})")
        keys = node_private_keys(args.database)
        tables = create_bare_tables(args.database, secrets.token_hex(4))
        ctx = BareContext(dsn=common.dsn(args.database), cache=args.cache, redis_url=redis_url,
                          entity_id=setup.entity_id, token_url=setup.token_url,
                          client_public_jwk=crypto.public_jwk(setup.client_key),
                          at_private_pem=keys["access_token"][1], at_kid=keys["access_token"][0],
                          handoff_private_pem=keys["handoff"][1], handoff_kid=keys["handoff"][0],
                          htu=server.url + "/api/v1/handoffs", tables=tables)
        # Warm every worker (imports, connections, first statements) outside the measurement.
        warm = argparse.Namespace(**{**vars(args), "seconds": 2.0})
        cir_token_phase(server, setup, warm, "warm")
        cir_handoff_phase(server, setup, warm, "warm")

        kinds = [k for k in ("token", "handoff") if args.only in (None, k)]
        results: dict[str, dict[str, list[Phase]]] = {k: {"cir": [], "bare": []} for k in kinds}
        for round_no in range(args.rounds):
            for kind in kinds:
                order = ("cir", "bare") if round_no % 2 == 0 else ("bare", "cir")
                for side in order:
                    label = f"{kind} {side} #{round_no + 1}"
                    if side == "cir":
                        phase = (cir_token_phase if kind == "token" else cir_handoff_phase)(server, setup, args, label)
                    elif kind == "token":
                        phase = bare_token_phase(ctx, setup, args, label)
                    else:
                        phase = bare_handoff_phase(ctx, server, setup, args, label)
                    results[kind][side].append(phase)
                    cpu = (f", {'server' if side == 'cir' else 'process'} CPU {phase.server_cpu_ms_per_op:.2f} ms/op"
                           if phase.server_cpu_ms_per_op is not None else "")
                    common.log(f"  {label:<18} {phase.rate:9.1f}/s  ({phase.ops} in {phase.seconds:.1f} s, "
                               f"p50 {phase.p50_ms:.1f} ms, p99 {phase.p99_ms:.1f} ms{cpu}"
                               + (f", {phase.errors} errors" if phase.errors else "")
                               + (f", {phase.reused} lines reused" if phase.reused else "") + ")")
                    if side == "cir":
                        check(phase.errors == 0, f"{label}: every request answered 2xx ({phase.errors} did not)")
                        check(phase.reused == 0, f"{label}: no request line was sent twice")
        if args.profile:
            profile(server, setup, args, kinds)

        # The replay cache must still hold the run's first assertion after everything since.
        status, _ = http_post(server.url + "/oauth/token", first.encode(),
                              {"Content-Type": "application/x-www-form-urlencoded"})
        check(status == 401, f"the run's first assertion, sent again at the end, is refused as a replay ({status})")
        audit_state = json.loads(common.shell(args.database, AUDIT_CHECK).strip().splitlines()[-1])
        check(audit_state["broken_at"] is None, f"the audit chain verifies ({audit_state['entries']} entries)")
        print()
        for kind in kinds:
            summarise("access_token" if kind == "token" else "handoff", results[kind]["cir"], results[kind]["bare"],
                      args)
    finally:
        server.stop()
        if tables:
            drop_bare_tables(args.database, tables)
        if args.cache == "redis":
            try:
                import redis

                client = redis.Redis.from_url(redis_url)
                for pattern in ("*cir:jti:*", "bench:jti:*"):  # only this run's keys: never flush a shared db
                    for key in client.scan_iter(match=pattern, count=1000):
                        client.delete(key)
            except Exception:
                pass
    return 1 if failures else 0


def profile(server: common.Server, setup: Setup, args: argparse.Namespace, kinds: list[str]) -> None:
    """py-spy on every worker during one more CIR phase of each kind; prints the hot spots."""
    for kind in kinds:
        prefix = str(Path(tempfile.gettempdir()) / f"cir-bench-tokens-{os.getpid()}-{kind}-profile")
        outputs = common.py_spy_record(server.worker_pids(), args.seconds + 3, prefix)
        time.sleep(1.0)
        (cir_token_phase if kind == "token" else cir_handoff_phase)(server, setup, args, f"{kind} profiled")
        time.sleep(4.0)
        common.log(f"--- profile of {kind} issuance (py-spy, all workers; files {prefix}-*.txt)")
        common.log(common.summarise_collapsed(outputs, top=30))


if __name__ == "__main__":
    sys.exit(main())
