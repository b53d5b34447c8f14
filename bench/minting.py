#!/usr/bin/env python
"""Benchmark: minting resources in bulk through the service layer vs a raw bulk insert of the same rows.

Scratch PostgreSQL databases are cloned from the migrated template (``tests/support/nodes.py``
``ensure_template``); the shared catalog is not touched. Set-up (not timed), in ``<tag>_svc``: a national
node (``cir_node_init``), one provider ``86.BMT01`` with three sites through ``registry.services`` (the CSV
import's provider), and the demo catalog's 40 providers and their sites (``registry.demo.build`` with 0
resources). A copy of that state, ``<tag>_base``, is the template of every baseline database.

Timed, each in a ``manage.py shell`` child on the production settings (``DEBUG=0``), the clock around the
service calls only (generating the input is outside it):

1. ``csv``: ``registry.imports.import_resources_csv`` of N resources for ``86.BMT01`` (the admin's and the
   command's CSV import), in files of at most 50,000 rows (the import's limit), each all-or-nothing in one
   transaction. Every row goes through ``services.resource_create``: validation (``full_clean``), the
   local_id check, a freshly minted UCRI, the insert, and its outbox entry (commit-ordered ``seq``). Rows:
   the demo catalog's resource specs (``registry.demo.resource_spec``, seed 1) placed on the provider's sites.
2. ``demo``: ``registry.demo.build(seed=1, resources=N)``, the bulk path of ``cir_demo`` (batches of 5,000:
   ``bulk_create`` and one outbox draw per batch, the same feed records), across the 40 demo providers.

Resource creation writes no audit entry (audit is for operator, credential and key events; the catalog's
record of change is the outbox): the script reports the audit entries written during each run (0).

Baseline, same run, for each path: the rows that path wrote (``registry_resource``, its
``core_outboxentry`` rows, the ``outbox`` counter) are read back and written into a fresh clone of
``<tag>_base`` by one psycopg connection in one transaction, as (a) ``COPY ... FROM STDIN`` (binary) and
(b) ``executemany`` of a plain ``INSERT`` (psycopg pipelines it), ``--repeat`` times each on a fresh clone;
the medians are reported. No target is set by the issue: the script prints resources/s and the ratios.

    .venv/bin/python bench/minting.py [--resources 100000] [--repeat 3] [--only csv|demo] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# tests.support.nodes imports Django's (lazily configured) connection; give it settings to find.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")

import psycopg

from tests.support.nodes import ensure_template

ENTITY_ID = common.CATALOG_ENTITY_ID
PROVIDER_CODE = "BMT01"
CSV_LOCAL_PREFIX = "imp-"
SEED = 1

SETUP = """
import json
from registry import demo, services
from registry.models import Provider
provider = services.provider_approve(name="Mint Bench Cloud", uscc={uscc!r}, code={code!r}, actor="command:bench")
for name, province in (("Gui'an DC 1", "52"), ("Qingyang DC 2", "62"), ("Wuhu DC 3", "34")):
    services.site_create(provider=provider, data=dict(name=name, province=province, pue=1.2, green_ratio=0.5,
                                                      rack_availability=0.4))
demo.build(seed={seed}, resources=0)
print(json.dumps({{"prefix": provider.prefix, "providers": Provider.objects.count()}}))
"""

# Runs in the node's shell. Builds the CSV files first (untimed), then times only the imports.
CSV_RUN = """
import csv, io, json, resource, time
from decimal import Decimal
from core import outbox
from core.models import AuditEntry
from registry import demo, imports
from registry.models import Provider, Site
from registry.validators import format_endpoints_cell
N, CHUNK = {n}, {chunk}
provider = Provider.objects.get(prefix={prefix!r})
sites = [s.name for s in Site.objects.filter(provider=provider).order_by("name")]
plan = demo.plan_providers({seed})

def cell(value):
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

files = []
for start in range(0, N, CHUNK):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(imports.COLUMNS)
    for i in range(start, min(N, start + CHUNK)):
        fields = dict(demo.resource_spec(plan, {seed}, i).fields)
        fields["local_id"] = f"{local_prefix}{{i:09d}}"
        row = []
        for column in imports.COLUMNS:
            if column == "site":
                row.append(sites[i % len(sites)])
            elif column == "endpoints":
                row.append(format_endpoints_cell(fields["endpoints"]))
            else:
                row.append(cell(fields.get(column)))
        writer.writerow(row)
    files.append(buffer.getvalue())
head_before, audit_before = outbox.head(), AuditEntry.objects.count()
started = time.perf_counter()
cpu_started = time.process_time()
created = 0
for text in files:
    report = imports.import_resources_csv(provider=provider, file_text=text)
    if not (report.ok and report.applied):
        raise SystemExit(f"import failed: {{report.errors[:5]}}")
    created += len(report.created)
seconds = time.perf_counter() - started
cpu = time.process_time() - cpu_started
print(json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "created": created, "files": len(files),
                  "outbox_from": head_before + 1, "outbox_to": outbox.head(),
                  "audit_entries": AuditEntry.objects.count() - audit_before,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

DEMO_RUN = """
import json, resource, time
from core import outbox
from core.models import AuditEntry
from registry import demo
head_before, audit_before = outbox.head(), AuditEntry.objects.count()
started = time.perf_counter()
cpu_started = time.process_time()
summary = demo.build(seed={seed}, resources={n})
seconds = time.perf_counter() - started
cpu = time.process_time() - cpu_started
print(json.dumps({{"seconds": seconds, "cpu_seconds": cpu, "created": summary.created["resources"],
                  "outbox_from": head_before + 1, "outbox_to": outbox.head(),
                  "audit_entries": AuditEntry.objects.count() - audit_before,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def admin(sql: str) -> None:
    with psycopg.connect(common.ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


def clone(source: str, name: str) -> str:
    admin(f'CREATE DATABASE "{name}" TEMPLATE "{source}"')
    return name


def drop(name: str) -> None:
    admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def valid_uscc(n: int) -> str:
    from stdnum.cn import uscc

    body = f"9152{n:06d}MA{n % 10000:04d}"[:17].ljust(17, "0")
    return body + uscc.calc_check_digit(body)


def run_child(database: str, code: str) -> dict[str, Any]:
    return json.loads(common.shell(database, code, timeout=None).strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# Reading back what a path wrote, and writing it again without the framework

def columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                        "ORDER BY ordinal_position", (table,)).fetchall()
    return [r[0] for r in rows]


class Written:
    """The rows one path wrote: resources (by a WHERE clause) and outbox entries (a seq range)."""

    def __init__(self, database: str, resource_where: str, outbox_from: int, outbox_to: int) -> None:
        with psycopg.connect(common.dsn(database)) as conn:
            self.resource_columns = columns(conn, "registry_resource")
            self.outbox_columns = columns(conn, "core_outboxentry")
            quoted_r = ", ".join(f'"{c}"' for c in self.resource_columns)
            quoted_o = ", ".join(f'"{c}"' for c in self.outbox_columns)
            resource_sql = f"SELECT {quoted_r} FROM registry_resource WHERE {resource_where} ORDER BY id"
            outbox_sql = (f"SELECT {quoted_o} FROM core_outboxentry WHERE seq BETWEEN {outbox_from} AND {outbox_to}"
                          " ORDER BY seq")
            self.resource_copy = self._copy_out(conn, resource_sql)
            self.outbox_copy = self._copy_out(conn, outbox_sql)
            # Values as psycopg loads them, for executemany (json columns as Jsonb, so they dump back).
            self.resource_rows = self._rows(conn, resource_sql, self.resource_columns, "registry_resource")
            self.outbox_rows = self._rows(conn, outbox_sql, self.outbox_columns, "core_outboxentry")
            self.outbox_head = outbox_to

    @staticmethod
    def _copy_out(conn: psycopg.Connection, sql: str) -> bytes:
        data = bytearray()
        with conn.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)") as copy:
            for chunk in copy:
                data += chunk
        return bytes(data)

    @staticmethod
    def _rows(conn: psycopg.Connection, sql: str, names: list[str], table: str) -> list[tuple]:
        from psycopg.types.json import Jsonb

        types = dict(conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                  "WHERE table_name = %s", (table,)).fetchall())
        json_at = [i for i, name in enumerate(names) if types[name] in ("json", "jsonb")]
        rows = []
        for row in conn.execute(sql).fetchall():
            if json_at:
                row = list(row)
                for i in json_at:
                    row[i] = None if row[i] is None else Jsonb(row[i])
                row = tuple(row)
            rows.append(row)
        return rows

    @property
    def resources(self) -> int:
        return len(self.resource_rows)

    @property
    def outbox_entries(self) -> int:
        return len(self.outbox_rows)

    def copy_in(self, database: str) -> float:
        quoted_r = ", ".join(f'"{c}"' for c in self.resource_columns)
        quoted_o = ", ".join(f'"{c}"' for c in self.outbox_columns)
        with psycopg.connect(common.dsn(database)) as conn:
            started = time.perf_counter()
            with conn.transaction():
                with conn.cursor().copy(f"COPY registry_resource ({quoted_r}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(self.resource_copy)
                with conn.cursor().copy(f"COPY core_outboxentry ({quoted_o}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(self.outbox_copy)
                conn.execute("UPDATE core_counter SET last = %s WHERE name = 'outbox'", (self.outbox_head,))
            return time.perf_counter() - started

    def executemany_in(self, database: str) -> float:
        def insert(table: str, names: list[str]) -> str:
            return (f"INSERT INTO {table} ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in names)}) "
                    f"VALUES ({', '.join(['%s'] * len(names))})")

        with psycopg.connect(common.dsn(database)) as conn:
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(insert("registry_resource", self.resource_columns), self.resource_rows)
                cursor.executemany(insert("core_outboxentry", self.outbox_columns), self.outbox_rows)
                cursor.execute("UPDATE core_counter SET last = %s WHERE name = 'outbox'", (self.outbox_head,))
            return time.perf_counter() - started


def baseline(written: Written, base: str, tag: str, repeat: int) -> dict[str, list[float]]:
    """Seconds of each way in, each on a fresh clone of the set-up state; interleaved."""
    times: dict[str, list[float]] = {"copy": [], "executemany": []}
    for i in range(repeat):
        for way in ("copy", "executemany") if i % 2 == 0 else ("executemany", "copy"):
            target = clone(base, f"{tag}_b{i}{way[0]}")
            try:
                seconds = written.copy_in(target) if way == "copy" else written.executemany_in(target)
                count = common.query(target, "SELECT count(*) FROM registry_resource")[0][0]
                if count < written.resources:
                    raise SystemExit(f"baseline {way} left {count} resources")
                times[way].append(seconds)
                common.log(f"    baseline {way:<11} {written.resources / seconds:10,.0f} resources/s "
                           f"({seconds:.2f} s)")
            finally:
                drop(target)
    return times


def report(path: str, measured: dict[str, Any], written: Written, times: dict[str, list[float]],
           args: argparse.Namespace) -> None:
    rate = measured["created"] / measured["seconds"]
    copy_rate = written.resources / common.median(times["copy"])
    many_rate = written.resources / common.median(times["executemany"])
    common.log(f"  {path}: {measured['created']:,} resources in {measured['seconds']:.1f} s = {rate:,.0f}/s "
               f"(CPU {measured['cpu_seconds']:.1f} s, peak RSS {measured['peak_rss_mb']:.0f} MB, "
               f"{written.outbox_entries:,} outbox entries, {measured['audit_entries']} audit entries); "
               f"COPY {copy_rate:,.0f}/s -> 1 : {copy_rate / rate:.1f}; executemany {many_rate:,.0f}/s "
               f"-> 1 : {many_rate / rate:.1f}")
    label = ("registry.imports.import_resources_csv (services.resource_create per row)" if path == "csv"
             else "registry.demo.build (cir_demo's bulk path)")
    common.result(
        f"minting.{path}", figure=rate, unit="resources/s", baseline=copy_rate,
        baseline_label="psycopg COPY (binary) of the same resource and outbox rows, one transaction",
        ratio=rate / copy_rate, target="none (report the ratio)", met=True,
        path=label, resources=measured["created"], seconds=round(measured["seconds"], 2),
        cpu_seconds=round(measured["cpu_seconds"], 2), peak_rss_mb=round(measured["peak_rss_mb"], 1),
        outbox_entries=written.outbox_entries, audit_entries=measured["audit_entries"],
        copy_seconds=[round(t, 3) for t in times["copy"]],
        executemany_rate=round(many_rate, 1), executemany_ratio=round(rate / many_rate, 4),
        executemany_seconds=[round(t, 3) for t in times["executemany"]], cores=common.cores())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="baseline runs of each kind (fresh clone each)")
    parser.add_argument("--only", choices=("csv", "demo"))
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args()

    common.log(f"machine: {common.machine_summary()}")
    template = ensure_template()
    tag = f"cir_mint_{uuid.uuid4().hex[:8]}"
    svc, base = f"{tag}_svc", f"{tag}_base"
    created: list[str] = []
    try:
        created.append(clone(template, svc))
        common.manage(svc, "cir_node_init", "--role", "national", "--entity-id", ENTITY_ID, "--json")
        info = run_child(svc, SETUP.format(uscc=valid_uscc(770001), code=PROVIDER_CODE, seed=SEED))
        created.append(clone(svc, base))
        common.log(f"set-up: {svc} (template {template}), provider {info['prefix']}, {info['providers']} providers")
        paths = [p for p in ("csv", "demo") if args.only in (None, p)]
        for path in paths:
            common.log(f"{path}: minting {args.resources:,} resources through the service layer ...")
            if path == "csv":
                code = CSV_RUN.format(n=args.resources, chunk=50_000, prefix=info["prefix"], seed=SEED,
                                      local_prefix=CSV_LOCAL_PREFIX)
                where = f"local_id LIKE '{CSV_LOCAL_PREFIX}%'"
            else:
                code = DEMO_RUN.format(n=args.resources, seed=SEED)
                where = "local_id LIKE 'demo-%'"
            measured = run_child(svc, code)
            if measured["created"] != args.resources:
                raise SystemExit(f"{path}: created {measured['created']} of {args.resources}")
            written = Written(svc, where, measured["outbox_from"], measured["outbox_to"])
            common.log(f"  {path}: {measured['created']:,} in {measured['seconds']:.1f} s; baseline on clones "
                       f"of {base} ({written.resources:,} resources, {written.outbox_entries:,} outbox rows)")
            times = baseline(written, base, tag, args.repeat)
            report(path, measured, written, times, args)
    finally:
        if not args.keep:
            for name in reversed(created):
                drop(name)
        else:
            common.log(f"kept {', '.join(created)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
