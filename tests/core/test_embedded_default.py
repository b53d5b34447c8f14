"""The README's run command uses the embedded SQLite default: every migration must apply there too
(an index with NULLS LAST once broke it; see core.indexes.NullsOrderedIndex)."""

import subprocess
import sys

from tests.support.processes import ROOT, child_env


def test_every_migration_applies_on_the_embedded_sqlite_default(tmp_path):
    database = tmp_path / "embedded.sqlite3"
    result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT,
                            env=child_env(DATABASE_URL=f"sqlite:///{database}"), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert database.stat().st_size > 0
