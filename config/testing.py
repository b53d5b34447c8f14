"""pytest plugin loaded with ``-p config.testing`` before Django reads its settings.

The suite runs against the local PostgreSQL (CONTRACT §11 variables, overridable from the shell).
"""

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cir")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("CIR_REQUIRE_HTTPS", "0")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    import pytest

    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords or "bench" in item.keywords:
            item.add_marker(skip_slow)


# Logs of the run (issue 10): every log record of the test processes is written as a JSON line to
# <run dir>/pytest-<xdist worker>.jsonl; the real nodes (tests/support/nodes.py) write their processes'
# output to the same directory. At the end the controller scans them all for key material and tokens
# and fails the run on any hit. Each run has its own directory (runs may share this checkout).
LOG_ROOT = Path(__file__).resolve().parent.parent / "test-output" / "logs"
LOG_DIR_VARIABLE = "CIR_TEST_LOG_DIR"
KEEP_RUN_LOGS = 2 * 24 * 3600  # seconds: older runs' directories are removed at the start of a run
os.environ.setdefault(LOG_DIR_VARIABLE, str(LOG_ROOT / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"))
_log_handler = None


@dataclass(frozen=True)
class LogHit:
    path: Path
    line: int
    pattern: str

    def __str__(self) -> str:  # never the secret itself
        return f"{self.path}:{self.line}: {self.pattern}"


def scan_logs(paths, *, literals: dict[str, str] | None = None) -> list[LogHit]:
    """Every line of ``paths`` holding key material or a token (core.logs patterns), or one of the
    ``literals`` (name -> a configured secret's value)."""
    from core.logs import find_secrets

    literals = {name: value for name, value in (literals or {}).items() if value and len(value) >= 12}
    hits = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                found = find_secrets(line) + [name for name, value in literals.items() if value in line]
                hits.extend(LogHit(Path(path), number, name) for name in found)
    return hits


def _run_log_dir() -> Path:
    return Path(os.environ[LOG_DIR_VARIABLE])


def _is_controller(config) -> bool:
    return not hasattr(config, "workerinput")


def _install_log_handler() -> None:
    """(Re)attach the run's handler to the root logger: Django's logging set-up replaces root handlers."""
    global _log_handler
    import logging

    if _log_handler is None:
        from core.logs import JsonFormatter, RedactingFilter

        run_dir = _run_log_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        _log_handler = logging.FileHandler(run_dir / f"pytest-{worker}.jsonl", encoding="utf-8", delay=True)
        _log_handler.setFormatter(JsonFormatter())
        _log_handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    if _log_handler not in root.handlers:
        root.addHandler(_log_handler)


def pytest_sessionstart(session):
    if _is_controller(session.config) and LOG_ROOT.is_dir():
        cutoff = time.time() - KEEP_RUN_LOGS
        for old in LOG_ROOT.iterdir():
            if old.is_dir() and old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
    _install_log_handler()


def pytest_runtest_setup(item):
    _install_log_handler()


def pytest_sessionfinish(session, exitstatus):
    import pytest

    if _log_handler is not None:
        _log_handler.close()
    if not _is_controller(session.config):
        return  # the controller scans once, after every worker has finished
    run_dir = _run_log_dir()
    paths = sorted(p for p in run_dir.glob("*") if p.is_file()) if run_dir.is_dir() else []
    hits = scan_logs(paths, literals={"secret_key": os.environ.get("SECRET_KEY", ""),
                                      "key_encryption_key": os.environ.get("CIR_KEY_ENCRYPTION_KEY", "")})
    session.config._cir_log_scan = (run_dir, len(paths), hits)
    if hits and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    scan = getattr(config, "_cir_log_scan", None)
    if scan is None:
        return
    run_dir, files, hits = scan
    if not hits:
        terminalreporter.write_line(f"log scan: no key material or tokens in {files} log files ({run_dir})")
        return
    terminalreporter.section("secrets in the run's logs", sep="=", red=True, bold=True)
    for hit in hits:
        terminalreporter.write_line(str(hit))
    terminalreporter.write_line(f"log scan: {len(hits)} hits in {files} log files: the run fails", red=True)
