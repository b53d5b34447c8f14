"""Structured logs (core/logs.py): one JSON object per line with the request id and the node, and no
secret in the message, its arguments, the extras or the traceback; the end-of-run log scan
(config/testing.py) catches what slips through."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.conf import settings
from django.test import override_settings

from config.testing import scan_logs
from core import logs, requestid
from identity import crypto
from tests.support.processes import ROOT, child_env

# Made-up but well-formed secrets of every kind the redaction knows.
_KEY = crypto.generate_private_key()
JWS = crypto.sign({"iss": "https://cir.gz.example.cn", "sub": "86.52"}, _KEY, typ="at+jwt", kid="k1")
OPAQUE = "2YotnFZFEjr1zCsicMWpAA.opaque-access-token"
FERNET_KEY = Fernet.generate_key().decode()
FERNET_TOKEN = Fernet(FERNET_KEY.encode()).encrypt(b"private key bytes").decode()
PRIVATE_JWK = crypto.private_jwk(_KEY)
PEM = crypto.private_pem(_KEY).decode().strip()
UCRI = "86.52.GZ01/7ZK3M9Q2AB4C-L"
URL = f"https://cir.gz.example.cn/api/v1/resolve/{UCRI}?after=10&limit=500"
KID = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"  # RFC 7638 thumbprints are not secrets

SECRETS = {
    "jws": (JWS, "[redacted jws]"),
    "bearer": (f"Bearer {OPAQUE}", "Bearer [redacted token]"),
    "dpop": (f"DPoP {OPAQUE}", "DPoP [redacted token]"),
    "pem": (PEM, "[redacted pem]"),
    "jwk": (json.dumps(PRIVATE_JWK), '"d": "[redacted jwk]"'),
    "symmetric jwk": ('{"kty": "oct", "k": "GawgguFyGrWKav7AX4VKUg"}', '"k": "[redacted jwk]"'),
    "fernet token": (FERNET_TOKEN, "[redacted fernet]"),
    "fernet key": (f"CIR_KEY_ENCRYPTION_KEY {FERNET_KEY}", "[redacted fernet key]"),
    "client_assertion": ("grant_type=client_credentials&client_assertion=abc.def.ghi&scope=x",
                         "client_assertion=[redacted]&scope=x"),
    "password": ("login password=hunter2hunter2 failed", "password=[redacted] failed"),
    "json password": ('{"password": "hunter2hunter2"}', '"password": "[redacted]"'),
    "url password": ("postgres://cir:s3cr3t-pw@db.internal:5432/cir", "postgres://cir:[redacted]@db.internal"),
}


def secret_text(kind: str) -> str:
    return SECRETS[kind][0]


@pytest.fixture(autouse=True)
def _no_request_id():
    """Each test starts outside any unit of work (an earlier test's federation call outside a request
    may have left an id in this thread)."""
    token = requestid._current.set(None)
    yield
    requestid._current.reset(token)


@pytest.fixture
def capture():
    """Records of the logger ``t`` formatted by the JSON formatter behind the redaction filter, as
    settings.LOGGING does."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RedactingFilter())
    logger = logging.getLogger("t")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


@override_settings(CIR_ENTITY_ID="https://cir.gz.example.cn")
def test_one_json_object_per_line_with_time_level_logger_request_id_node_and_extras(capture):
    logger, lines = capture
    with requestid.using("req-0000-test-1"):
        logger.info("pulled %d pages\nfrom %s", 3, "gz", extra={"peer": "https://cir.gz.example.cn", "pages": 3,
                                                              "detail": {"cursor": 7, "seq": [1, 2]}})
    logger.warning("outside any request")
    try:
        raise ValueError("broken page")
    except ValueError:
        logger.exception("pull failed")
    first, second, third = lines()
    assert set(first) >= {"time", "level", "logger", "message", "request_id", "node"}
    assert first["message"] == "pulled 3 pages\nfrom gz"  # one line: the newline is escaped in the JSON
    assert (first["level"], first["logger"], first["request_id"]) == ("INFO", "t", "req-0000-test-1")
    assert first["node"] == "https://cir.gz.example.cn"
    assert (first["peer"], first["pages"], first["detail"]) == ("https://cir.gz.example.cn", 3,
                                                               {"cursor": 7, "seq": [1, 2]})
    assert first["time"].endswith("Z")
    assert dt.datetime.fromisoformat(first["time"]).utcoffset() == dt.timedelta(0)
    assert "exception" not in first
    assert second["request_id"] is None and second["level"] == "WARNING"
    assert third["level"] == "ERROR" and "ValueError: broken page" in third["exception"]
    assert "Traceback" in third["exception"]


def test_an_extra_named_like_a_core_field_does_not_replace_it(capture):
    logger, lines = capture
    logger.info("hello", extra={"node": "spoofed", "time": "spoofed"})
    (line,) = lines()
    assert line["node"] != "spoofed" and line["time"] != "spoofed"
    assert line["extra_node"] == line["extra_time"] == "spoofed"


def test_objects_in_extras_are_logged_as_text(capture):
    logger, lines = capture
    logger.info("x", extra={"when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "request": object()})
    (line,) = lines()
    assert line["when"] == "2026-01-02 00:00:00+00:00"
    assert "request" not in line  # Django's request object: its repr holds the query string


@pytest.mark.parametrize("kind", list(SECRETS))
def test_each_kind_of_secret_is_redacted_in_message_args_extras_and_tracebacks(capture, kind):
    secret, marker = SECRETS[kind]
    logger, lines = capture
    logger.info(f"in the message: {secret}")
    logger.info("in an argument: %s", secret)
    logger.info("in a mapping argument: %(value)s", {"value": secret})
    logger.info("in extras", extra={"body": secret, "nested": {"list": [secret], "pair": ("x", secret)}})
    try:
        raise RuntimeError(f"peer said {secret}")
    except RuntimeError:
        logger.exception("in a traceback")
    output = [json.dumps(line) for line in lines()]
    assert len(output) == 5
    for line in output:
        for part in _sensitive_parts(secret):
            assert part not in line, (kind, line)
        assert logs.find_secrets(line) == [], (kind, line)
    parsed = lines()
    assert marker in parsed[0]["message"] and marker in parsed[1]["message"] and marker in parsed[2]["message"]
    assert marker in parsed[3]["body"] and marker in parsed[3]["nested"]["list"][0]
    assert marker in parsed[4]["exception"]


def _sensitive_parts(secret: str) -> list[str]:
    """What must not survive: the secret's value, not the words around it."""
    if secret == json.dumps(PRIVATE_JWK):
        return [PRIVATE_JWK["d"]]
    for prefix in ("Bearer ", "DPoP ", "CIR_KEY_ENCRYPTION_KEY "):
        if secret.startswith(prefix):
            return [secret[len(prefix):]]
    return {
        SECRETS["client_assertion"][0]: ["abc.def.ghi"],
        SECRETS["password"][0]: ["hunter2hunter2"], SECRETS["json password"][0]: ["hunter2hunter2"],
        SECRETS["url password"][0]: ["s3cr3t-pw"],
        SECRETS["symmetric jwk"][0]: ["GawgguFyGrWKav7AX4VKUg"],
    }.get(secret, [secret])


def test_private_jwk_members_in_extras_are_redacted_public_ones_kept(capture):
    logger, lines = capture
    logger.info("key", extra={"jwk": PRIVATE_JWK, "keys": [PRIVATE_JWK], "password": "hunter2hunter2",
                              "authorization": f"Bearer {OPAQUE}"})
    (line,) = lines()
    assert line["jwk"]["d"] == line["keys"][0]["d"] == "[redacted jwk]"
    assert line["jwk"]["x"] == PRIVATE_JWK["x"] and line["jwk"]["kty"] == "EC"
    assert line["password"] == line["authorization"] == "[redacted]"


def test_the_callers_extras_are_not_modified(capture):
    logger, _ = capture
    jwk = dict(PRIVATE_JWK)
    logger.info("key", extra={"jwk": jwk})
    assert jwk == PRIVATE_JWK


def test_ucris_urls_thumbprints_and_ordinary_text_are_left_alone(capture):
    logger, lines = capture
    public_jwk = '{"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"}'
    ordinary = [UCRI, URL, f"kid {KID}", "http://127.0.0.1:8000/federation/changes?after=0&limit=500",
                "postgres://postgres@127.0.0.1:5432/cir", "redis://:**@127.0.0.1:6379/6", "a DPoP proof was refused",
                "the Bearer scheme",
                "epoch 3f2a9c1e0b7d4e5f8a6b2c1d0e9f8a7b changed", "sha256 " + "ab" * 32, "seq=42 head=7",
                "password too short", public_jwk]
    for text in ordinary:
        logger.info("%s", text)
        assert logs.redact(text) == text
        assert logs.find_secrets(text) == []
    assert [line["message"] for line in lines()] == ordinary


def test_a_record_is_redacted_once_through_several_handlers(capture):
    logger, lines = capture
    second = io.StringIO()
    handler = logging.StreamHandler(second)
    handler.setFormatter(logs.PlainFormatter())
    logger.addHandler(handler)
    try:
        with requestid.using("req-0000-test-2"):
            logger.info("token %s", JWS)
    finally:
        logger.removeHandler(handler)
    assert lines()[0]["message"] == "token [redacted jws]"
    plain = second.getvalue()
    assert "[req-0000-test-2] token [redacted jws]" in plain and JWS not in plain


def test_the_plain_formatter_redacts_without_a_filter():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "Authorization: %s", (f"Bearer {JWS}",), None)
    text = logs.PlainFormatter().format(record)
    assert JWS not in text and "Authorization: Bearer [redacted jws]" in text and " [-] " in text


def test_settings_log_json_by_default_and_plain_on_request():
    """CIR_LOG_FORMAT (unset: json), in a process of its own as a node reads it."""
    assert settings.LOGGING["handlers"]["console"]["filters"] == ["redact"]
    code = ("import django, logging; django.setup(); from django.conf import settings; "
            "logging.getLogger('t').warning('hello %s', 'Bearer abcdefghijklmnop'); print(settings.CIR_LOG_FORMAT)")
    expected = {"": lambda err: json.loads(err.splitlines()[-1])["message"] == "hello Bearer [redacted token]",
                "plain": lambda err: err.splitlines()[-1].endswith("WARNING t [-] hello Bearer [redacted token]")}
    for value, check in expected.items():
        env = child_env(CIR_LOG_FORMAT=value)
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (value or "json")
        assert check(done.stderr), done.stderr
    env = child_env(CIR_LOG_FORMAT="xml")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "CIR_LOG_FORMAT must be json or plain" in done.stderr


def test_the_log_scan_catches_a_planted_jws_and_names_no_secret(tmp_path):
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps({"message": f"resolved {UCRI} at {URL}"}) + "\n")
    planted = tmp_path / "planted.log"
    planted.write_text("line one\n" + json.dumps({"message": "ok"}) + "\n" + f"GET /x?token={JWS} 200\n")
    assert scan_logs([clean]) == []
    hits = scan_logs([clean, planted])
    assert [(hit.path, hit.line, hit.pattern) for hit in hits] == [(planted, 3, "jws")]
    assert JWS not in str(hits[0]) and str(hits[0]) == f"{planted}:3: jws"


def test_the_log_scan_finds_every_kind_and_configured_secrets(tmp_path):
    path = tmp_path / "all.log"
    path.write_text("\n".join([secret_text(kind) for kind in SECRETS if kind != "pem"] + [PEM.splitlines()[0]]
                              + ["SECRET_KEY is test-only-secret-key-not-for-production"]) + "\n")
    hits = scan_logs([path], literals={"secret_key": "test-only-secret-key-not-for-production"})
    lines_hit = {hit.line for hit in hits}
    assert lines_hit == set(range(1, len(SECRETS) + 2))
    assert {hit.pattern for hit in hits} >= {"jws", "token", "jwk_private", "fernet_token", "fernet_key", "pem",
                                             "client_assertion", "password", "url_password", "secret_key"}
