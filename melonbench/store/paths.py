"""Where melonbench keeps prepared datasets, checkpoints and results, and the check that they can be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from melonbench.core.errors import StoreError


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


def writable_home() -> Path:
    """:func:`home`, created if needed, once it is known to take new files (else one clear ``StoreError``).

    Every command that writes into the store calls this before any work, so that a read-only store or a
    ``MELONBENCH_HOME`` that names a file fails at once, not after a download or a pre-training.
    """
    where = "MELONBENCH_HOME" if os.environ.get("MELONBENCH_HOME") else "the melonbench store"
    return writable(home(), where, "set MELONBENCH_HOME to a writable folder")


def writable(folder: Path, what: str, hint: str) -> Path:
    """Create ``folder`` (and its parents) if needed and check that a file can be created in it.

    Parameters
    ----------
    folder : Path
        The folder.
    what : str
        How messages name it (``MELONBENCH_HOME``, ``the result folder``).
    hint : str
        What to do about it, appended to the message.

    Raises
    ------
    StoreError
        When ``folder`` or one of its parents is a file, or the folder cannot be created or written.
    """
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                named = "is a file" if parent == folder else f"lies under {parent}, a file"
                raise StoreError(f"{what} {folder} {named}, not a folder: {hint}")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe(folder)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise StoreError(f"{what} {folder} cannot be written ({reason}): {hint}") from None
    return folder


def _probe(folder: Path) -> None:
    # Creating a file is the only test that tells: permission bits say nothing to root, nor on a read-only mount.
    fd, name = tempfile.mkstemp(dir=folder, prefix=".write-check.")
    os.close(fd)
    os.unlink(name)
