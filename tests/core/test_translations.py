"""The Chinese catalog is complete and the committed .mo is what the .po compiles to.

The compiled catalog is committed (as Django itself does) so a node runs in both languages without a
build step; these tests keep the two files, and the strings in the code, in step.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"

pytestmark = pytest.mark.skipif(shutil.which("msgfmt") is None, reason="GNU gettext (msgfmt) is not installed")


def _msgids(po: Path) -> set[str]:
    text = po.read_text(encoding="utf-8")
    ids = set()
    for block in re.split(r"\n\s*\n", text):
        if "#, fuzzy" in block and 'msgid ""\nmsgstr ""' not in block:
            raise AssertionError(f"fuzzy entry left in {po.name}:\n{block}")
        match = re.search(r'^msgid ((?:".*"\n?)+)', block, re.M)
        if not match:
            continue
        ident = "".join(re.findall(r'"(.*)"', match.group(1)))
        context = re.search(r'^msgctxt "(.*)"', block, re.M)
        if ident:
            ids.add((context.group(1) + "\x04" if context else "") + ident)
    return ids


def test_every_message_is_translated():
    result = subprocess.run(["msgfmt", "--check", "--statistics", "-o", "/dev/null", str(CATALOG / "django.po")],
                            capture_output=True, text=True, check=True)
    assert "untranslated" not in result.stderr and "fuzzy" not in result.stderr, result.stderr


def test_committed_mo_is_the_compiled_po(tmp_path):
    compiled = tmp_path / "django.mo"
    subprocess.run(["msgfmt", "-o", str(compiled), str(CATALOG / "django.po")], check=True)
    assert compiled.read_bytes() == (CATALOG / "django.mo").read_bytes(), "run: manage.py compilemessages"


def test_every_string_in_the_code_is_in_the_catalog(tmp_path):
    """``makemessages`` over a copy of the tracked sources finds nothing the catalog lacks."""
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        if name.endswith((".py", ".html", ".txt")) and not name.startswith(("tests/", "bench/")):
            target = tmp_path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target)
    (tmp_path / "locale").mkdir()
    subprocess.run([sys.executable, "-m", "django", "makemessages", "-l", "zh_Hans", "--no-location"],
                   cwd=tmp_path, check=True, capture_output=True, env={"PATH": os.environ["PATH"]})
    extracted = _msgids(tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po")
    missing = sorted(extracted - _msgids(CATALOG / "django.po"))
    assert not missing, "strings without a Chinese translation (run makemessages -l zh_Hans):\n" + "\n".join(missing)
