"""Shared test fixtures: the real data beside the repository, and an isolated storage root per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Triton kernels (melonbench/strategies/melon/fused.py) run in Triton's interpreter in the tests, on the CPU. Triton
# reads this when it defines its own library functions, so it is set before anything imports Triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

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
