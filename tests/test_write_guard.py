"""conftest.py's guard: a test that writes outside its temporary folders fails, whatever way it got there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

INNER = """
from pathlib import Path

from melonbench.store.paths import home


def test_undo_loses_the_per_test_store(monkeypatch):
    monkeypatch.undo()  # the bug of issue 18: this also undoes conftest's per-test MELONBENCH_HOME
    (home() / "checkpoints").mkdir(parents=True)
    (home() / "checkpoints" / "bpr.pt").write_bytes(b"weights")


def test_writes_into_the_repository():
    (Path(__file__).parent / "results.txt").write_text("x")


def test_writes_under_home():
    (Path.home() / ".melonbenchrc").write_text("x")


def test_stays_in_its_temporary_folders(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (home() / "datasets").mkdir(parents=True)
"""


def test_the_guard_fails_each_test_that_writes_outside_and_only_those(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(Path(__file__).with_name("conftest.py"), project / "conftest.py")
    (project / "test_inner.py").write_text(INNER)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'tmp'}", "-rN"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "4 passed, 3 errors" in out
    wrote = "the test wrote outside its temporary folders:"
    errors = dict(re.findall(r"_ ERROR at teardown of (\w+) _+\n(.*)", out))
    assert errors == {
        "test_undo_loses_the_per_test_store": f"{wrote} $HOME/.cache (added), "
        "$HOME/.cache/melonbench (added), $HOME/.cache/melonbench/checkpoints (added), "
        "$HOME/.cache/melonbench/checkpoints/bpr.pt (added)",
        "test_writes_into_the_repository": f"{wrote} repository/results.txt (added)",
        "test_writes_under_home": f"{wrote} $HOME/.melonbenchrc (added)",
    }
