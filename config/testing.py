"""pytest plugin loaded with ``-p config.testing`` before Django reads its settings.

The suite runs against the local PostgreSQL (CONTRACT §11 variables, overridable from the shell).
"""

import os

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
