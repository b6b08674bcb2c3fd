"""Shared test fixtures: the real data beside the repository, and an isolated storage root per test."""

from __future__ import annotations

from pathlib import Path

import pytest

# CI clones the repository into a fresh folder with a copy of shared/ beside it, as in development.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The folder of real interaction data (never copied into the repository)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA} (expected ../shared/data beside the repository)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def melonbench_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own storage root, so no test reads or writes the user's cache."""
    home = tmp_path_factory.mktemp("melonbench_home")
    monkeypatch.setenv("MELONBENCH_HOME", str(home))
    return home
