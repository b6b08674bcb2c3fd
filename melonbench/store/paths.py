"""Where melonbench keeps prepared datasets, checkpoints and results."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The storage root: ``$MELONBENCH_HOME`` if set, else the platform's user cache directory."""
    env = os.environ.get("MELONBENCH_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs  # here: the speed benchmarks run with $MELONBENCH_HOME on GPU machines without it

    return Path(platformdirs.user_cache_dir("melonbench"))


def datasets_dir() -> Path:
    """Prepared datasets, one folder per dataset name."""
    return home() / "datasets"


def downloads_dir() -> Path:
    """Raw downloaded files (kept so that a re-prepare with other options needs no download)."""
    return home() / "downloads"


def checkpoints_dir() -> Path:
    """Pre-trained recommenders and meta-models, named by content hash."""
    return home() / "checkpoints"


def results_dir() -> Path:
    """Default result store (``results/<run_id>/``)."""
    return home() / "results"
