"""Structured logs: one JSON object per line, with the request id and the node, and no secrets.

``JsonFormatter`` (the default, ``CIR_LOG_FORMAT=json``) writes ``time`` (RFC 3339, UTC), ``level``,
``logger``, ``message``, ``request_id``, ``node`` (``CIR_ENTITY_ID``), the ``extra`` fields of the call,
and ``exception`` (the traceback) when there is one. ``PlainFormatter`` (``CIR_LOG_FORMAT=plain``) is
for people at a terminal.

``RedactingFilter`` (on every handler; both formatters also apply it to a record no filter saw) stamps
the request id and replaces secrets in the message, its arguments, the extras and the traceback by a
marker such as ``[redacted jws]``: compact JWS/JWT/JWE, ``Bearer``/``DPoP`` credentials, PEM blocks,
private JWK members, Fernet tokens and keys, ``client_assertion=`` form values, passwords and secrets
(``password=...``, ``"secret": "..."``, the password of a ``scheme://user:password@host`` URL).
``find_secrets`` uses the same patterns to check log files (the test suite scans its own logs).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from . import requestid

JWK_PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "k"})
SECRET_KEYS = re.compile(r"(?i)(password|passwd|secret|secret_key|encryption_key|api_key|apikey|client_assertion"
                         r"|access_token|refresh_token|private_key|authorization|cookie)\Z")

_B64 = r"[A-Za-z0-9_-]"
_NOT_B64_BEFORE = r"(?<![A-Za-z0-9_+/-])"
# name -> (pattern, replacement). Order matters: a PEM block may hold anything; a JWS inside a "Bearer ..."
# becomes "[redacted jws]" and is not matched again.
PATTERNS: dict[str, tuple[str, str]] = {
    "pem": (r"-----BEGIN [A-Z0-9 ]{1,64}-----[\s\S]*?(?:-----END [A-Z0-9 ]{1,64}-----|\Z)", "[redacted pem]"),
    "jws": (rf"(?<![A-Za-z0-9_-])eyJ{_B64}+(?:\.{_B64}*){{2,4}}", "[redacted jws]"),
    "token": (r"(?P<scheme>\b(?i:bearer|dpop)\s+)[A-Za-z0-9._~+/=-]{8,}", r"\g<scheme>[redacted token]"),
    "client_assertion": (r"(?P<field>client_assertion=)(?!\[redacted)[^&\s\"'\\]+", r"\g<field>[redacted]"),
    "jwk_private": (rf"(?P<member>\\?[\"'](?:d|p|q|dp|dq|qi|k)\\?[\"']\s*:\s*\\?[\"']){_B64}{{8,}}",
                    r"\g<member>[redacted jwk]"),
    "fernet_token": (rf"{_NOT_B64_BEFORE}gAAAAA{_B64}{{20,}}={{0,2}}", "[redacted fernet]"),
    "fernet_key": (rf"{_NOT_B64_BEFORE}{_B64}{{43}}=(?![A-Za-z0-9_=-])", "[redacted fernet key]"),
    "password": (r"(?P<name>(?i:\b[a-z_]*(?:password|passwd|secret|secret_key|encryption_key|api_key|apikey))"
                 r"\\?[\"']?\s*[:=]\s*\\?[\"']?)(?!\[redacted)[^\s\"'&,;}\]\\]+", r"\g<name>[redacted]"),
    "url_password": (r"(?P<user>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):(?!\[redacted|\*+@)[^@\s/]+@",
                     r"\g<user>:[redacted]@"),
}
_COMPILED = [(name, re.compile(pattern), replacement) for name, (pattern, replacement) in PATTERNS.items()]
# One cheap test before the substitutions: most log lines hold none of these.
_HINT = re.compile(r"eyJ|-----BEGIN|(?i:bearer|dpop)\s|client_assertion=|gAAAAA|=|[\"']\s*:|://[^/\s]*:[^/\s]*@")
_B64_SECRET = re.compile(rf"{_B64}{{16,}}")


def redact(text: str) -> str:
    """``text`` with every secret the patterns know replaced by its marker."""
    if not _HINT.search(text):
        return text
    for _, pattern, replacement in _COMPILED:
        text = pattern.sub(replacement, text)
    return text


def find_secrets(text: str) -> list[str]:
    """The names of the patterns that match in ``text`` (for scanning log files; never the secret)."""
    return [name for name, pattern, _ in _COMPILED if pattern.search(text)]


def redact_value(value: Any, *, key: str | None = None, jwk: bool = False) -> Any:
    """A redacted copy of an ``extra`` value: strings through ``redact``, containers element-wise, the
    private members of a JWK and values under secret-looking keys replaced whole."""
    if key is not None and value not in (None, "") and SECRET_KEYS.match(key):
        return "[redacted]"
    if isinstance(value, str):
        if key in JWK_PRIVATE and (jwk or _B64_SECRET.fullmatch(value)):
            return "[redacted jwk]"
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        is_jwk = "kty" in value
        return {str(k): redact_value(v, key=str(k), jwk=is_jwk) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value))


# Attributes every LogRecord has, and those logging adds while formatting: everything else is an extra.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "request_id", "taskName"}
# Extras that are objects, not data: Django passes the request (its repr holds the query string) and the
# development server its socket.
_SKIPPED_EXTRAS = frozenset({"request", "server_time"})
_REDACTED = "_cir_redacted"


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items()
            if k not in _STANDARD and k not in _SKIPPED_EXTRAS and not k.startswith("_")}


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Stamp the request id and redact the record in place, once (a record may pass several handlers)."""
    if getattr(record, _REDACTED, False):
        return record
    if not hasattr(record, "request_id"):
        # Django logs a 4xx response after the middleware returned: the request it passes holds the id.
        record.request_id = requestid.current() or getattr(getattr(record, "request", None), "request_id", None)
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: keep its parts, each redacted
        message = f"{record.msg} {record.args!r}"
    record.msg, record.args = redact(message), None
    for key, value in extras(record).items():
        setattr(record, key, redact_value(value, key=key))
    if record.exc_info and not record.exc_text:
        record.exc_text = _EXCEPTIONS.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    setattr(record, _REDACTED, True)
    return record


_EXCEPTIONS = logging.Formatter()


class RedactingFilter(logging.Filter):
    """On every handler: stamps the request id and redacts secrets. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def _node() -> str | None:
    try:
        from django.conf import settings

        return getattr(settings, "CIR_ENTITY_ID", None) or None
    except Exception:  # settings not configured (a bare script)
        return None


def rfc3339(created: float) -> str:
    return dt.datetime.fromtimestamp(created, tz=dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (newlines inside values are escaped)."""

    CORE = ("time", "level", "logger", "message", "request_id", "node")

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        entry: dict[str, Any] = {"time": rfc3339(record.created), "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage(), "request_id": record.request_id, "node": _node()}
        for key, value in extras(record).items():
            entry[key if key not in entry else f"extra_{key}"] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    """``time level logger [request id] message``, redacted like the JSON lines."""

    def __init__(self, fmt: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s", *args, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        redact_record(record)
        if record.request_id is None:
            record.request_id = "-"
        return super().format(record)
