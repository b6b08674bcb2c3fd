"""Shared test fixtures: the real data beside the repository, an isolated storage root per test, and a guard that
fails any test that writes outside its temporary folders."""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# Triton kernels (melonbench/strategies/melon/fused.py) run in Triton's interpreter in the tests, on the CPU. Triton
# reads this when it defines its own library functions, so it is set before anything imports Triton.
os.environ.setdefault("TRITON_INTERPRET", "1")
# One CPU thread per test process (and per child process a test starts). The tests' tensors are tiny, so a second
# thread only adds synchronisation, and on a loaded 2-core machine OpenMP's waiting threads burn the CPU that the
# work needs (test_fixed_shape's S²Meta-NCF case: 39.5 s of CPU with two threads, 5.9 s with one). Set before
# anything imports torch, which reads it once.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# CI clones the repository into a fresh folder with a copy of shared/ beside it, as in development.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The folder of real interaction data (never copied into the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (expected ../shared/data beside the repository)")
    return SHARED_DATA


# The session's stand-ins for the places a test must never write to: a fake home folder (HOME and the XDG folders,
# so the default store, platformdirs' user cache, resolves inside it) and the tools' own caches, kept apart so that
# matplotlib's font cache or Triton's build cache, written once per session, are not taken for a test's writes.
REDIRECTED = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "MELONBENCH_HOME")
TOOL_CACHES = ("MPLCONFIGDIR", "TRITON_HOME", "TRITON_CACHE_DIR")
# Version control, environments and the caches of tools that pytest or its plugins may bring (pytest-benchmark's
# .benchmarks appears on a machine that has it installed, before the first test ends).
NOT_WATCHED = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".mypy_cache",
    ".hypothesis",
    ".benchmarks",
    ".whl",
    ".gl",
}
EDITOR_FILES = (".*.sw?", "*~", ".#*", "#*#")  # swap, backup and lock files of someone editing during the run
_GUARD = pytest.StashKey["WriteGuard"]()


@dataclass
class WriteGuard:
    """The folders no test may change and their last known state.

    In the session's fake home any change counts. In the repository only files and folders that appear or
    disappear do: a developer may edit files while the suite runs, and a test that rewrites a tracked file shows
    in ``git status`` anyway.
    """

    sandbox: Path
    watched: dict[str, Path]
    skip: set[Path]
    saved_env: dict[str, str | None]
    state: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def snapshot(self, root: Path) -> dict[str, tuple[int, int]]:
        """``{relative path: (size, mtime_ns)}`` of every file and folder under ``root``."""
        out: dict[str, tuple[int, int]] = {}
        for folder, dirs, files in os.walk(root):
            dirs[:] = [
                d
                for d in dirs
                if d not in NOT_WATCHED and not d.endswith(".egg-info") and Path(folder, d) not in self.skip
            ]
            for name in dirs + files:
                if any(fnmatch.fnmatch(name, pattern) for pattern in EDITOR_FILES):
                    continue
                path = Path(folder, name)
                try:
                    st = path.lstat()
                except FileNotFoundError:  # removed while walking
                    continue
                out[str(path.relative_to(root))] = (st.st_size if name in files else 0, st.st_mtime_ns)
        return out

    def changes(self) -> list[str]:
        """What changed since the last call, as ``label/path (added|removed|modified)``; the new state is kept."""
        found = []
        for label, root in self.watched.items():
            now = self.snapshot(root)
            before = self.state.get(label, {})
            for path in sorted(now.keys() | before.keys()):
                if path not in before:
                    found.append(f"{label}/{path} (added)")
                elif path not in now:
                    found.append(f"{label}/{path} (removed)")
                elif now[path] != before[path] and label != "repository" and not (root / path).is_dir():
                    found.append(f"{label}/{path} (modified)")
            self.state[label] = now
        return found


def pytest_configure(config: pytest.Config) -> None:
    """Point HOME, the XDG folders and the tools' caches at a fresh session folder; unset MELONBENCH_HOME.

    Done before any test runs, so nothing the suite starts (the package, subprocesses, a test that loses its own
    ``MELONBENCH_HOME``) can reach the user's real home or store.
    """
    sandbox = Path(tempfile.mkdtemp(prefix="melonbench-tests-"))
    fake_home = sandbox / "home"
    saved = {name: os.environ.get(name) for name in REDIRECTED + TOOL_CACHES}
    os.environ.pop("MELONBENCH_HOME", None)  # a test without its own store falls back to the (fake) user cache
    os.environ["HOME"] = str(fake_home)
    for name, sub in (("XDG_CACHE_HOME", ".cache"), ("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share")):
        os.environ[name] = str(fake_home / sub)
    for name in TOOL_CACHES:
        os.environ[name] = str(sandbox / "tools" / name.lower())
    fake_home.mkdir()
    basetemp = config.getoption("basetemp", None)
    guard = WriteGuard(
        sandbox,
        {"$HOME": fake_home, "repository": config.rootpath},
        {Path(basetemp).resolve()} if basetemp else set(),
        saved,
    )
    guard.changes()
    config.stash[_GUARD] = guard


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Take the guard's baseline again once every plugin has configured itself (some create their folders then)."""
    guard = session.config.stash.get(_GUARD, None)
    if guard is not None:
        guard.changes()


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(_GUARD, None)
    if guard is None:
        return
    for name, value in guard.saved_env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(guard.sandbox, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_writes_outside_temporary_folders(request: pytest.FixtureRequest):
    """Fail the test (at teardown) when it changed the fake home or the repository tree."""
    guard = request.config.stash[_GUARD]
    yield
    changed = guard.changes()
    if changed:
        shown = ", ".join(changed[:5]) + (f", … ({len(changed)} in all)" if len(changed) > 5 else "")
        pytest.fail(f"the test wrote outside its temporary folders: {shown}", pytrace=False)


@pytest.fixture(autouse=True)
def melonbench_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own storage root, so no test reads or writes the user's cache."""
    home = tmp_path_factory.mktemp("melonbench_home")
    monkeypatch.setenv("MELONBENCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def grocery_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root with the real Amazon Grocery 2014 5-core prepared as ``grocery`` (20-core, 80:2:18).

    Prepared once per test session; tests that use it must not modify it (see ``in_grocery``).
    """
    from melonbench.core.config import PrepareOptions
    from melonbench.data.prepare import prepare_dataset

    home = tmp_path_factory.mktemp("grocery_home")
    folder = SHARED_DATA / "amazon-grocery-5core-2014-rechorus"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MELONBENCH_HOME", str(home))
        options = PrepareOptions(
            inputs=tuple(folder / f for f in ("train.csv", "dev.csv", "test.csv")),
            columns="user_id,item_id,time",
            name="grocery",
            split=(80.0, 2.0, 18.0),
        )
        prepare_dataset("csv", options)
    return home


@pytest.fixture
def in_grocery(grocery_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$MELONBENCH_HOME`` at the session's prepared Grocery (checkpoints made there are shared too)."""
    monkeypatch.setenv("MELONBENCH_HOME", str(grocery_home))
    return grocery_home
