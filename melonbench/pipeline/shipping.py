"""A task run where the driver's filesystem is not: the files it reads travel with it, the files it makes come back.

The worker lays the task out in a private store: under ``home/`` the files it reads from ``$MELONBENCH_HOME`` (the
prepared dataset, the evaluation negatives of its seed, the checkpoint and meta-model it builds on, where the
driver has them), under ``results/`` its run's folder (a checkpoint to resume from, an earlier failure record). It
runs there exactly as it would here (:func:`run_in_private_store`) and sends back every file it made or changed,
and the names of those it removed. The driver writes them into its own store (:func:`land`), each file atomically
and a run's ``manifest.json`` last, since the manifest is what makes a run finished: an interruption between two
files leaves at worst an unfinished run, which resumes. A JSON file that names a path of the private store (a
failure record: "the last checkpoint is in ...") names the driver's instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from melonbench.online.candidates import negatives_path
from melonbench.pipeline.engines import transportable
from melonbench.pipeline.experiment import RunResult, stored_run
from melonbench.pipeline.tasks import Task, products
from melonbench.store.atomic import atomic_write_bytes
from melonbench.store.paths import datasets_dir, home
from melonbench.store.results import MANIFEST

HOME, RESULTS = "home", "results"
MARK = "<melonbench-private-store>"  # a private store's root in the JSON files sent back


@contextlib.contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for a block (a worker's private store), and put the old value back."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _json_text(path: Path | str) -> bytes:
    """``path`` as it appears inside a JSON string."""
    return json.dumps(str(path))[1:-1].encode()


def inputs(task: Task, results: Path, fingerprint: str) -> dict[str, Path]:
    """``{name in the private store: file in the driver's store}`` of everything ``task`` reads that exists here."""
    c = task.config
    dataset = datasets_dir() / c.dataset
    files = [p for p in dataset.iterdir() if p.is_file()]
    files += [negatives_path(dataset, c.seed, protocol, c.n_negatives) for protocol in ("leakfree", "paper")]
    files += products(dataclasses.replace(task, kind="pretrain"), fingerprint)
    if task.kind == "run" and task.needs and task.needs[0].startswith("meta-"):
        files += products(dataclasses.replace(task, kind="meta"), fingerprint)
    out = {f"{HOME}/{p.relative_to(home()).as_posix()}": p for p in files if p.is_file()}
    if task.kind == "run":
        folder = stored_run(task.config, results)[0].path
        if folder.is_dir():
            out |= {f"{RESULTS}/{p.relative_to(results).as_posix()}": p for p in folder.rglob("*") if p.is_file()}
    return out


def run_in_private_store(
    files: dict[str, bytes], run: Callable[[Path], Any]
) -> tuple[Any, dict[str, bytes], list[str]]:
    """In a worker: lay ``files`` out in a fresh private store, call ``run(results folder)`` with
    ``$MELONBENCH_HOME`` pointing there, and return its result (or its exception) with paths relative to the store,
    the files made or changed (``{name: bytes}``) and the names of the given files that are gone."""
    with tempfile.TemporaryDirectory(prefix="melonbench-task-") as tmp:
        root = Path(tmp)
        digests = {}
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
            digests[name] = hashlib.sha256(data).digest()
        with environment("MELONBENCH_HOME", str(root / HOME)):
            try:
                value = run(root / RESULTS)
            except Exception as exc:
                value = transportable(exc)
        made = {}
        for path in sorted(root.rglob("*")):
            name = path.relative_to(root).as_posix()
            if path.is_file() and not path.name.startswith("."):  # a dot-file: a temporary or a write check
                data = path.read_bytes()
                if digests.get(name) != hashlib.sha256(data).digest():
                    made[name] = data.replace(_json_text(root), MARK.encode()) if name.endswith(".json") else data
        removed = [name for name in files if not (root / name).exists()]
        return _relative(value, root), made, removed


def land(value: Any, made: dict[str, bytes], removed: list[str], results: Path) -> Any:
    """In the driver: write what a task sent back into the store (a run's manifest last), remove what it removed,
    and return its result with the driver's paths."""

    def target(name: str) -> Path:
        top, _, rest = name.partition("/")
        return (home() if top == HOME else results) / rest

    for name in sorted(made, key=lambda n: n.endswith(f"/{MANIFEST}")):
        data = made[name]
        if name.endswith(".json"):
            for top in (HOME, RESULTS):
                data = data.replace(f"{MARK}/{top}".encode(), _json_text(target(f"{top}/x").parent))
        atomic_write_bytes(target(name), data)
    for name in removed:
        target(name).unlink(missing_ok=True)
    if isinstance(value, RunResult):
        return dataclasses.replace(value, path=target(value.path.as_posix()))
    if isinstance(value, Path):
        return target(value.as_posix())
    return value


def _relative(value: Any, root: Path) -> Any:
    """A result's paths as names in the private store (they mean nothing outside the worker)."""
    if isinstance(value, RunResult):
        return dataclasses.replace(value, path=value.path.relative_to(root))
    if isinstance(value, Path):
        return value.relative_to(root)
    return value
