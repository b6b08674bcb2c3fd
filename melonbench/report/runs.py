"""Runs as the report sees them: read from the result store, grouped into cells, and paired only when aligned.

A run belongs to a *setting*: the dataset plus, when they are not the defaults, the run protocol (``paper``) and the
replayed split (``validation``); each setting is its own block of rows in every table. Within a setting a
(model, strategy, seed) must have exactly one run. Two runs may be *paired* (compared batch by batch) only when
they replayed the same stream from the same checkpoint against the same evaluation negatives, over the same
batches: :func:`aligned` checks exactly that and names whatever differs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from melonbench.core.errors import MelonbenchError
from melonbench.store.results import read_runs

SPAN = ("batch", "start", "n")
# (label in messages, path in the manifest): what two paired runs must share.
PAIR_KEYS = (
    ("dataset fingerprint", ("dataset", "fingerprint")),
    ("model", ("config", "model")),
    ("seed", ("config", "seed")),
    ("run protocol", ("config", "protocol")),
    ("split", ("config", "split")),
    ("checkpoint key", ("checkpoint", "key")),
    ("negatives_sha256", ("negatives_sha256",)),
)
REQUIRED = (("run_id",), ("config", "dataset"), ("config", "strategy"), *(path for _, path in PAIR_KEYS))


class PairingError(MelonbenchError):
    """Two runs that cannot be compared batch by batch (different streams, checkpoints, negatives or batches)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One finished run: its identity, what pairing needs, and its per-batch rows.

    Attributes
    ----------
    setting : str
        Row-block label: the dataset name, plus ``[paper protocol]`` / ``[validation split]`` when not default.
    batches : polars.DataFrame
        Every replayed batch (validation and test), as stored.
    manifest : dict
        The stored manifest, unchanged.
    folder : Path
        The run's folder (for its ``lr/`` matrices).
    """

    run_id: str
    dataset: str
    setting: str
    model: str
    strategy: str
    label: str
    seed: int
    split: str
    device: str
    batches: pl.DataFrame
    manifest: dict[str, Any]
    folder: Path

    def reported(self) -> pl.DataFrame:
        """The batches of the reported split (``test`` for a test run), in batch order."""
        return self.batches.filter(pl.col("split") == self.split).sort("batch")

    def timed(self) -> pl.DataFrame:
        """Every replayed batch except the flagged timing warm-up (all of them if all are warm-up)."""
        rest = self.batches.filter(~pl.col("warmup"))
        return rest if len(rest) else self.batches

    def mean(self, column: str) -> float:
        """Interaction-weighted mean of ``column`` over the reported split (as the run summary computes it)."""
        part = self.reported()
        if part["n"].sum() == 0:
            return math.nan
        return float(np.average(part[column].to_numpy(), weights=part["n"].to_numpy()))


def _get(manifest: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = manifest
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def setting_label(dataset: str, protocol: str, split: str) -> str:
    """``synthetic`` for the default leak-free test replay, else e.g. ``synthetic [paper protocol]``."""
    extra = [f"{protocol} protocol"] if protocol != "leakfree" else []
    extra += [f"{split} split"] if split != "test" else []
    return f"{dataset} [{', '.join(extra)}]" if extra else dataset


def to_run(manifest: dict[str, Any], batches: pl.DataFrame, folder: Path) -> Run:
    """Wrap one stored run; a manifest without the keys pairing needs is refused with those keys named."""
    missing = [".".join(path) for path in REQUIRED if _get(manifest, path) is None]
    if missing:
        raise MelonbenchError(f"run in {folder} cannot be reported: its manifest lacks {', '.join(missing)}")
    config = manifest["config"]
    strategy = manifest.get("strategy", {})
    return Run(
        run_id=manifest["run_id"],
        dataset=config["dataset"],
        setting=setting_label(config["dataset"], config["protocol"], config["split"]),
        model=config["model"],
        strategy=config["strategy"],
        label=strategy.get("label", config["strategy"]),
        seed=int(config["seed"]),
        split=config["split"],
        device=_get(manifest, ("device", "name")) or "unknown device",
        batches=batches,
        manifest=manifest,
        folder=folder,
    )


def load_runs(root: Path, datasets: Iterable[str] = (), run_ids: set[str] | None = None) -> list[Run]:
    """Every complete run under ``root``, checked for duplicates.

    Parameters
    ----------
    root : Path
        The result store.
    datasets : iterable of str
        Keep only runs of these datasets (default: all).
    run_ids : set of str, optional
        Keep only these runs (``reproduce`` reports exactly its grid).

    Raises
    ------
    MelonbenchError
        When nothing is found, or when two runs claim the same (setting, model, strategy, seed): the report would
        otherwise have to pick one silently.
    """
    wanted = set(datasets)
    runs = [to_run(m, b, root / m.get("run_id", "?")) for m, b in read_runs(root)]
    runs = [r for r in runs if (not wanted or r.dataset in wanted) and (run_ids is None or r.run_id in run_ids)]
    if not runs:
        which = f" for dataset(s) {', '.join(sorted(wanted))}" if wanted else ""
        raise MelonbenchError(f"no finished runs{which} in {root} (run `melonbench run` or `melonbench reproduce`)")
    seen: dict[tuple[str, str, str, int], Run] = {}
    for run in runs:
        key = (run.setting, run.model, run.strategy, run.seed)
        if key in seen:
            other = seen[key]
            diff = sorted(
                k
                for k in set(run.manifest["config"]) | set(other.manifest["config"])
                if run.manifest["config"].get(k) != other.manifest["config"].get(k)
            )
            raise MelonbenchError(
                f"two runs of {run.setting}/{run.model}/{run.strategy} seed {run.seed} ({other.run_id}, {run.run_id}; "
                f"config differs in: {', '.join(diff) or 'nothing but the code version'}): report them from separate "
                "result folders"
            )
        seen[key] = run
    return runs


def aligned(a: Run, b: Run, columns: Iterable[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The reported batches of ``a`` and ``b`` as aligned arrays, refusing any pair that is not comparable.

    Parameters
    ----------
    a, b : Run
        The two runs (usually two strategies on the same setting, model and seed).
    columns : iterable of str
        Per-batch columns to return.

    Returns
    -------
    tuple of dict
        ``{column: Float[n_batches]}`` for ``a`` and for ``b``, batch ``i`` of one paired with batch ``i`` of the
        other.

    Raises
    ------
    PairingError
        Naming every manifest key that differs, or the batches one run has and the other lacks, or the batches
        whose start or size differ.
    """
    differ = [label for label, path in PAIR_KEYS if _get(a.manifest, path) != _get(b.manifest, path)]
    if differ:
        detail = "; ".join(
            f"{label}: {_get(a.manifest, p)!r} vs {_get(b.manifest, p)!r}" for label, p in PAIR_KEYS if label in differ
        )
        raise PairingError(f"runs {a.run_id} and {b.run_id} cannot be paired: they differ in {detail}")
    fa, fb = a.reported(), b.reported()
    ia, ib = fa["batch"].to_list(), fb["batch"].to_list()
    only_a, only_b = sorted(set(ia) - set(ib)), sorted(set(ib) - set(ia))
    if only_a or only_b:
        parts = [f"{r.run_id} lacks batches {_short(m)}" for r, m in ((b, only_a), (a, only_b)) if m]
        raise PairingError(f"runs {a.run_id} and {b.run_id} cannot be paired: {'; '.join(parts)}")
    spans_a, spans_b = fa.select(SPAN).rows(), fb.select(SPAN).rows()
    bad = [sa[0] for sa, sb in zip(spans_a, spans_b, strict=True) if sa != sb]
    if bad:
        raise PairingError(
            f"runs {a.run_id} and {b.run_id} cannot be paired: batches {_short(bad)} cover different interactions "
            "(start or n differ)"
        )
    cols = list(columns)
    return ({c: fa[c].to_numpy().astype(float) for c in cols}, {c: fb[c].to_numpy().astype(float) for c in cols})


def _short(values: list[int], limit: int = 8) -> str:
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", … ({len(values)} in all)" if len(values) > limit else "")
