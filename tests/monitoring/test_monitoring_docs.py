"""The Grafana dashboard and the Prometheus alert rules in docs/monitoring: the dashboard is valid JSON
whose every panel queries metrics /metrics exports, the rules pass ``promtool check rules`` (Debian's
prometheus package, installed by scripts/test) and name exported metrics only, and the dashboard's
queries are valid PromQL (promtool checks them as recording rules)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from rest_framework.test import APIClient

from federation.models import Peer
from tests.monitoring.scraping import scrape
from tests.support import factories

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "monitoring" / "grafana-dashboard.json"
ALERTS = ROOT / "docs" / "monitoring" / "alerts.yml"
METRIC = re.compile(r"\bcir_[a-z0-9_]+")
BUILT_IN = {"up"}  # series Prometheus itself adds to every target


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package prometheus; scripts/test installs it)")
    return found


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", []))
        if panel.get("type") != "row":
            found.append(panel)
    return found


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in panels(dashboard):
        targets = [t.get("expr", "") for t in panel.get("targets", [])]
        assert targets and all(targets), f"panel {panel['title']!r} has no query"
        exprs.extend(targets)
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


@pytest.fixture
def exported(ready_node, db):
    """Every family /metrics can export, populated: a peer of each relation, a provider, a request."""
    Peer.objects.create(entity_id="http://127.0.0.1:8011", relation="subordinate", prefixes=["86.52.11"])
    Peer.objects.create(entity_id="http://127.0.0.1:8000", relation="superior")
    site = factories.site(factories.provider(code="GZ01"))
    factories.resource(site)
    api = APIClient()
    api.get("/healthz")
    return scrape(api).exported_names()


def test_the_dashboard_is_valid_json_and_every_query_names_exported_metrics(exported):
    exprs = dashboard_exprs()
    assert len(exprs) >= 30
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names or set(re.findall(r"\b[a-z_]+(?=\{)", expr)) <= BUILT_IN, f"a query names no metric: {expr}"
        assert names <= exported, f"{sorted(names - exported)} are not exported (query: {expr})"
    covered = {name for expr in exprs for name in METRIC.findall(expr)}
    for wanted in ("cir_compute_eflops_by_kind", "cir_compute_eflops_by_hub", "cir_compute_eflops_by_province",
                   "cir_peer_lag_seconds", "cir_peer_lag_seq", "cir_peer_violations_total",
                   "cir_http_request_duration_seconds_bucket", "cir_oauth_tokens_total", "cir_handoff_requests_total",
                   "cir_provider_credentials", "cir_node_key_rotation_due_seconds", "cir_outbox_entries",
                   "cir_compute_fresh_share_by_hub", "cir_compute_price_per_hour_median_yuan"):
        assert wanted in covered, wanted


def test_every_alert_rule_names_exported_metrics(exported):
    exprs = alert_exprs()
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names or set(re.findall(r"\b[a-z_]+(?=\{)", expr)) <= BUILT_IN, expr
        assert names <= exported, f"{sorted(names - exported)} are not exported (rule: {expr})"
    text = ALERTS.read_text()
    for alert in ("CIRTargetDown", "CIRNotReady", "CIRPeerSyncLagging", "CIRPeerViolations",
                  "CIRProviderCredentialExpiringSoon", "CIRNodeKeyExpiringSoon"):
        assert f"alert: {alert}" in text


def test_promtool_accepts_the_alert_rules():
    done = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_dashboard_queries_are_valid_promql(tmp_path):
    tool = promtool()
    values = {"$__rate_interval": "5m", "$node": "gz", "${datasource}": "prometheus"}
    rules = []
    for i, expr in enumerate(dashboard_exprs()):
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"cir:dashboard_panel_query:{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_alerts_fire_on_the_series_they_are_for(tmp_path):
    """promtool's rule unit tests: each alert fires on the series /metrics exports, after its ``for``."""
    tool = promtool()
    day = 86400
    series = [
        {"series": 'up{job="cir", instance="a:8000", node="gz"}', "values": "1 0x20"},
        {"series": 'cir_readiness_check{job="cir", instance="a:8000", node="gz", check="keys"}', "values": "1 0x20"},
        {"series": 'cir_peer_lag_seconds{job="cir", instance="a:8000", node="gz", peer="http://p", '
                   'relation="subordinate"}', "values": "0 400x20"},
        {"series": 'cir_peer_violations_total{job="cir", instance="a:8000", node="gz", peer="http://p", '
                   'relation="subordinate"}', "values": "3 3 3 5x17"},
        {"series": 'cir_provider_credential_expiry_seconds{job="cir", instance="a:8000", node="gz", source="local"}',
         "values": f"{3 * day}x200"},
        {"series": 'cir_node_key_rotation_due_seconds{job="cir", instance="a:8000", node="gz", purpose="federation", '
                   'rotation="ceremony"}', "values": f"{5 * day}x100"},
        {"series": 'cir_node_key_rotation_due_seconds{job="cir", instance="a:8000", node="gz", purpose="handoff", '
                   'rotation="automatic"}', "values": f"{20 * day}x100"},
    ]

    def firing(alert: str, at: str, labels: dict | None) -> dict:
        return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": {**labels, "severity": sev}}
                                                                   for sev in [SEVERITY[alert]]] if labels else []}

    SEVERITY = {"CIRTargetDown": "critical", "CIRNotReady": "critical", "CIRPeerSyncLagging": "warning",
                "CIRPeerViolations": "warning", "CIRProviderCredentialExpiringSoon": "warning",
                "CIRNodeKeyExpiringSoon": "warning", "CIRNodeKeyRotationOverdue": "warning"}
    up = {"job": "cir", "instance": "a:8000", "node": "gz"}
    tests = [{"interval": "1m", "input_series": series, "alert_rule_test": [
        firing("CIRTargetDown", "1m", None),  # not yet: 2 minutes
        firing("CIRTargetDown", "5m", up),
        firing("CIRNotReady", "5m", {"node": "gz", "instance": "a:8000", "check": "keys"}),
        firing("CIRPeerSyncLagging", "4m", None),
        firing("CIRPeerSyncLagging", "10m", {"node": "gz", "peer": "http://p"}),
        firing("CIRPeerViolations", "5m", {"node": "gz", "peer": "http://p"}),
        firing("CIRPeerViolations", "19m", None),  # no increase in the last 15 minutes
        firing("CIRProviderCredentialExpiringSoon", "1h", None),
        firing("CIRProviderCredentialExpiringSoon", "150m", {"node": "gz"}),
        firing("CIRNodeKeyExpiringSoon", "90m", {"node": "gz", "purpose": "federation"}),
        firing("CIRNodeKeyRotationOverdue", "90m", None),
    ]}]
    # promtool compares annotations too; the rules are tested as they are, less their annotation texts.
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    path = tmp_path / "alerts-test.yml"
    path.write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([tool, "test", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
