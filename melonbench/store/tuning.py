"""Where ``melonbench tune`` keeps its work: one folder per tuning context inside the result store.

``<results>/tuning/<context>/`` holds, for one (dataset, model, strategy, fixed settings, pre-training, batch
size, negatives):

- ``runs/<run_id>/``: the trial runs (validation replays), a result store of their own so that ``report`` on
  ``<results>`` never mixes them with the runs it reports;
- ``<options>.json``: one record per tuning of that context (budget, seeds, ranking): every trial's settings and
  scores, and the choice once finished;
- ``current.json``: which record ``--tuned`` uses (the tuning finished last).

Every file is written atomically; a record in progress says ``"status": "running"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melonbench.store.atomic import atomic_write_json

CURRENT = "current.json"


@dataclass(frozen=True)
class TuningStore:
    """The tuning folders under one result store (``<results>/tuning``)."""

    root: Path

    def folder(self, context: str) -> Path:
        return self.root / context

    def trial_runs(self, context: str) -> Path:
        """The result store of this context's trial runs."""
        return self.root / context / "runs"

    def read(self, context: str, record: str) -> dict[str, Any] | None:
        """The record ``record`` (a file name) of ``context``, or None."""
        path = self.root / context / record
        return json.loads(path.read_text()) if path.is_file() else None

    def write(self, context: str, record: str, content: dict[str, Any]) -> Path:
        path = self.root / context / record
        atomic_write_json(path, content)
        return path

    def current(self, context: str) -> tuple[str, dict[str, Any]] | None:
        """``(record name, record)`` of the tuning ``--tuned`` uses, or None when the context has none finished."""
        pointer = self.root / context / CURRENT
        if not pointer.is_file():
            return None
        name = json.loads(pointer.read_text())["record"]
        record = self.read(context, name)
        return None if record is None or record.get("status") != "finished" else (name, record)

    def set_current(self, context: str, record: str) -> None:
        atomic_write_json(self.root / context / CURRENT, {"record": record})
