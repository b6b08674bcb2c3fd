"""The result store: one folder per run with tidy per-batch rows and a manifest.

``<results>/<run_id>/batches.parquet`` has one row per online batch (index, split, time range, n, cold users,
mean loss, every metric for both protocols, eval and update seconds, warm-up flag); ``manifest.json`` holds the
resolved config, the dataset/checkpoint/negatives fingerprints, the device and the versions. While a run is in
progress the folder holds ``partial.parquet`` and ``state.pt`` instead, so an interrupted run resumes from its
last checkpoint. A run that failed holds ``failure.json`` (what failed, where, and why; next to any checkpoint it
had): never ``batches.parquet`` and ``manifest.json``, so it is never taken for a finished run, and finishing the
run later removes it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from melonbench.core.errors import CheckpointError
from melonbench.store.atomic import atomic_write_bytes, atomic_write_json

BATCHES = "batches.parquet"
MANIFEST = "manifest.json"
PARTIAL = "partial.parquet"
STATE = "state.pt"
FAILURE = "failure.json"


def _frame_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame(rows).write_parquet(buf)
    return buf.getvalue()


@dataclass(frozen=True)
class RunStore:
    """The folder of one run."""

    path: Path

    def is_complete(self) -> bool:
        return (self.path / BATCHES).is_file() and (self.path / MANIFEST).is_file()

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())

    def batches(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / BATCHES)

    def load_progress(self) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Rows and state of an interrupted run (``([], None)`` when there is none to resume)."""
        state_path = self.path / STATE
        if not state_path.is_file():
            return [], None
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            rows = pl.read_parquet(self.path / PARTIAL).to_dicts()
        except Exception as exc:  # any unreadable file means the checkpoint cannot be trusted
            raise CheckpointError(
                f"cannot resume the run in {self.path}: its checkpoint is unreadable ({type(exc).__name__}); "
                "delete that folder to start over"
            ) from None
        # Rows are written before the state, so a crash in between leaves extra rows: keep the state's count.
        return rows[: state["batches_done"]], state

    def save_progress(self, rows: list[dict[str, Any]], state: dict[str, Any]) -> None:
        """Checkpoint: the rows so far, then the state needed to go on from ``state['batches_done']``."""
        atomic_write_bytes(self.path / PARTIAL, _frame_bytes(rows))
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.path / STATE, buf.getvalue())

    def has_checkpoint(self) -> bool:
        """Whether an interrupted (or failed) run left a state to resume from."""
        return (self.path / STATE).is_file()

    def record_failure(self, record: dict[str, Any]) -> None:
        """Write ``failure.json`` (atomically; it replaces an earlier one). Checkpoint files are left as they are."""
        atomic_write_json(self.path / FAILURE, record)

    def failure(self) -> dict[str, Any] | None:
        """The failure record of a run that failed and has not finished since (None otherwise)."""
        if self.is_complete() or not (self.path / FAILURE).is_file():
            return None
        return json.loads((self.path / FAILURE).read_text())

    def finish(self, rows: list[dict[str, Any]], manifest: dict[str, Any]) -> None:
        """Write the final rows and manifest, then drop the resume files and any earlier failure record.

        The run is complete as soon as the manifest is written; a failure record left by a crash after that point
        is ignored (:meth:`failure`, :func:`read_failures`).
        """
        atomic_write_bytes(self.path / BATCHES, _frame_bytes(rows))
        atomic_write_json(self.path / MANIFEST, manifest)
        for name in (PARTIAL, STATE, FAILURE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / name)


def read_runs(root: Path) -> list[tuple[dict[str, Any], pl.DataFrame]]:
    """Every complete run under ``root`` as ``(manifest, batches)``, sorted by run id."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        store = RunStore(folder)
        if store.is_complete():
            out.append((store.manifest(), store.batches()))
    return out


def read_failures(root: Path) -> list[dict[str, Any]]:
    """The failure record of every failed, unfinished run under ``root``, sorted by run id."""
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        record = RunStore(folder).failure()
        if record is not None:
            out.append(record)
    return out


def git_commit() -> str | None:
    """The commit of the melonbench checkout, when it is one (``+dirty`` if it has local changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
