"""Runs as the report sees them: read from the result store, grouped into cells, and paired only when aligned.

A run belongs to a *setting*: the dataset plus, when they are not the defaults, the run protocol (``paper``), the
replayed split (``validation``) and whether its strategy settings were tuned (``melonbench tune``); each setting
is its own block of rows in every table. Within a setting a
(model, strategy, seed) must have exactly one run. Two runs may be *paired* (compared batch by batch) only when
they replayed the same stream from the same checkpoint against the same evaluation negatives, over the same
batches: :func:`aligned` checks exactly that and names whatever differs. A run that failed is a :class:`Failure`
(read by :func:`load_failures`): the report lists it and counts the seeds each cell lacks, it never averages it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from melonbench.core.config import run_identity
from melonbench.core.errors import MelonbenchError
from melonbench.models import MODELS, is_reference
from melonbench.online.groups import run_mean, weight_column
from melonbench.online.timing import untimed_batches
from melonbench.store.results import read_failures, read_runs

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
        Row-block label: the dataset name, plus ``[paper protocol]`` / ``[validation split]`` / ``[tuned]`` when
        not default.
    reference : bool
        A reference recommender without learning (``pop``, ``recent-pop``): its row stands beside every learned
        model's strategies (``label`` is then the reference's, e.g. ``Recent-pop (W=256)``).
    batches : polars.DataFrame
        Every replayed batch (validation and test), as stored.
    manifest : dict
        The stored manifest, unchanged.
    folder : Path
        The run's folder (for its ``lr/`` matrices).
    tuned : dict[str, str] | None
        The settings ``melonbench tune`` chose (empty for a strategy with nothing to tune); None: not tuned.
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
    reference: bool = False
    tuned: dict[str, str] | None = None

    @property
    def row(self) -> str:
        """The row key in tables: the strategy, or for a reference the recommender's name."""
        return self.model if self.reference else self.strategy

    def reported(self) -> pl.DataFrame:
        """The batches of the reported split (``test`` for a test run), in batch order."""
        return self.batches.filter(pl.col("split") == self.split).sort("batch")

    def timed(self) -> pl.DataFrame:
        """Every replayed batch except the timing warm-up (all of them if all are warm-up): the flagged batches,
        and the first ``warmup`` after each resume (``online.timing.untimed_batches``)."""
        resumed = untimed_batches(int(self.manifest["config"].get("warmup", 0)), self.manifest.get("resumed_at") or ())
        rest = self.batches.filter(~pl.col("warmup") & ~pl.col("batch").is_in(sorted(resumed)))
        return rest if len(rest) else self.batches

    def mean(self, column: str) -> float:
        """The run's mean of ``column`` over the reported split: interaction-weighted (``n``, or the group's
        ``n_{group}`` for a warm/cold column), as :func:`melonbench.online.groups.run_mean` defines it."""
        part = self.reported()
        return run_mean(part[column].to_numpy(), part[weight_column(column)].to_numpy())

    def weights(self, column: str) -> np.ndarray:
        """Per reported batch, the interactions behind ``column`` (its weight in :meth:`mean`)."""
        return self.reported()[weight_column(column)].to_numpy().astype(float)


@dataclasses.dataclass(frozen=True)
class Failure:
    """One run that failed (its ``failure.json``), with the identity a report row needs.

    Attributes
    ----------
    stage : str
        Where it failed: ``set-up``, ``pre-training``, ``meta pre-training`` or ``replay``.
    batch : int | None
        The online batch whose loss was non-finite (replay divergence only).
    diverged : bool
        A non-finite loss (``DivergenceError``).
    unexpected : bool
        Not a ``MelonbenchError``: a defect, whose traceback the record keeps.
    reason : str
        The error's message, one line.
    """

    run_id: str
    dataset: str
    setting: str
    model: str
    strategy: str
    label: str
    seed: int
    stage: str
    batch: int | None
    diverged: bool
    unexpected: bool
    error: str
    reason: str
    traceback: str
    folder: Path

    @property
    def reference(self) -> bool:
        """A reference recommender without learning (see :attr:`Run.reference`)."""
        return is_reference(self.model)

    @property
    def row(self) -> str:
        """The row key in tables, as :attr:`Run.row`."""
        return self.model if self.reference else self.strategy

    def what(self) -> str:
        """One line: ``diverged at batch 7``, ``diverged in meta pre-training: …``, ``failed in replay: …``."""
        if self.diverged and self.stage == "replay" and self.batch is not None:
            return f"diverged at batch {self.batch}"
        verb = "diverged" if self.diverged else "failed"
        kind = f" (unexpected {self.error})" if self.unexpected else ""
        return f"{verb} in {self.stage}{kind}: {self.reason}"


def _get(manifest: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = manifest
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def setting_label(dataset: str, protocol: str, split: str, tuned: bool = False) -> str:
    """``synthetic`` for the default leak-free test replay, else e.g. ``synthetic [paper protocol, tuned]``."""
    extra = [f"{protocol} protocol"] if protocol != "leakfree" else []
    extra += [f"{split} split"] if split != "test" else []
    extra += ["tuned"] if tuned else []
    return f"{dataset} [{', '.join(extra)}]" if extra else dataset


def to_run(manifest: dict[str, Any], batches: pl.DataFrame, folder: Path) -> Run:
    """Wrap one stored run; a manifest without the keys pairing needs is refused with those keys named."""
    missing = [".".join(path) for path in REQUIRED if _get(manifest, path) is None]
    if missing:
        raise MelonbenchError(f"run in {folder} cannot be reported: its manifest lacks {', '.join(missing)}")
    config = manifest["config"]
    strategy = manifest.get("strategy", {})
    reference = is_reference(config["model"])
    label = strategy.get("label", config["strategy"])
    if reference:
        label = MODELS[config["model"]].describe(config.get("pretrain") or {})  # type: ignore[attr-defined]
    tuned = config.get("tuned")  # absent from manifests made before `melonbench tune`
    return Run(
        run_id=manifest["run_id"],
        dataset=config["dataset"],
        setting=setting_label(config["dataset"], config["protocol"], config["split"], tuned is not None),
        model=config["model"],
        strategy=config["strategy"],
        label=label,
        seed=int(config["seed"]),
        split=config["split"],
        device=_get(manifest, ("device", "name")) or "unknown device",
        batches=batches,
        manifest=manifest,
        folder=folder,
        reference=reference,
        tuned=None if tuned is None else {str(k): str(v) for k, v in tuned},
    )


def to_failure(record: dict[str, Any], folder: Path) -> Failure:
    """Wrap one failure record; one without the keys a report row needs is refused with those keys named."""
    need = (("run_id",), *((("config", k)) for k in ("dataset", "model", "strategy", "seed", "protocol", "split")))
    missing = [".".join(path) for path in need if _get(record, path) is None]
    if missing:
        raise MelonbenchError(f"failure record in {folder} cannot be reported: it lacks {', '.join(missing)}")
    config = record["config"]
    return Failure(
        run_id=record["run_id"],
        dataset=config["dataset"],
        setting=setting_label(config["dataset"], config["protocol"], config["split"], config.get("tuned") is not None),
        model=config["model"],
        strategy=config["strategy"],
        label=(
            MODELS[config["model"]].describe(config.get("pretrain") or {})  # type: ignore[attr-defined]
            if is_reference(config["model"])
            else _get(record, ("strategy", "label")) or config["strategy"]
        ),
        seed=int(config["seed"]),
        stage=str(record.get("stage", "?")),
        batch=record.get("batch"),
        diverged=bool(record.get("diverged")),
        unexpected=bool(record.get("unexpected")),
        error=str(record.get("error", "")),
        reason=str(record.get("reason", "")),
        traceback=str(record.get("traceback", "")),
        folder=folder,
    )


def load_failures(
    root: Path, datasets: Iterable[str] = (), run_ids: set[str] | None = None, runs: Iterable[Run] = ()
) -> list[Failure]:
    """Every failed, unfinished run under ``root`` (filtered like :func:`load_runs`).

    Raises
    ------
    MelonbenchError
        When a failure claims the (setting, model, strategy, seed) of one of ``runs`` or of another failure: one
        cell cannot be both, and the report would otherwise have to pick one silently.
    """
    wanted = set(datasets)
    failures = [to_failure(r, root / str(r.get("run_id", "?"))) for r in read_failures(root)]
    failures = [f for f in failures if (not wanted or f.dataset in wanted) and (run_ids is None or f.run_id in run_ids)]
    seen: dict[tuple[str, str, str, int], str] = {(r.setting, r.model, r.strategy, r.seed): r.run_id for r in runs}
    for f in failures:
        key = (f.setting, f.model, f.strategy, f.seed)
        if key in seen:
            raise MelonbenchError(
                f"{f.setting}/{f.model}/{f.strategy} seed {f.seed} has a failed run ({f.run_id}) and another run "
                f"({seen[key]}) with other settings: report them from separate result folders"
            )
        seen[key] = f.run_id
    return failures


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
        When nothing is found, or when two runs claim the same (setting, model, strategy, seed) with different
        identities (:func:`identity`): the report would otherwise have to pick one silently. Two runs with the
        same identity are one experiment stored twice (by an older melonbench, whose run ids also hashed the
        result-neutral settings): the one whose run id sorts first is kept.
    """
    wanted = set(datasets)
    runs = [to_run(m, b, root / m.get("run_id", "?")) for m, b in read_runs(root)]
    runs = [r for r in runs if (not wanted or r.dataset in wanted) and (run_ids is None or r.run_id in run_ids)]
    if not runs:
        which = f" for dataset(s) {', '.join(sorted(wanted))}" if wanted else ""
        failed = load_failures(root, wanted, run_ids)
        hint = (
            f"{len(failed)} failed: {'; '.join(f'{f.run_id}: {f.what()}' for f in failed[:3])}"
            + ("; …" if len(failed) > 3 else "")
            if failed
            else "run `melonbench run` or `melonbench reproduce`"
        )
        raise MelonbenchError(f"no finished runs{which} in {root} ({hint})")
    seen: dict[tuple[str, str, str, int], Run] = {}
    for run in runs:
        key = (run.setting, run.model, run.strategy, run.seed)
        if key in seen:
            other = seen[key]
            mine, theirs = identity(run.manifest), identity(other.manifest)
            if mine == theirs:
                continue  # runs come sorted by run id: the first is kept
            diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            raise MelonbenchError(
                f"two runs of {run.setting}/{run.model}/{run.strategy} seed {run.seed} ({other.run_id}, {run.run_id}; "
                f"config differs in: {', '.join(diff)}): report them from separate result folders"
            )
        seen[key] = run
    return list(seen.values())


def identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """What makes a stored run's results (as ``pipeline.experiment.run_id_for`` hashes it): its config without the
    result-neutral fields, the device type it ran on, the strategy's resolved config, the prepared data and the
    code version."""
    out = run_identity(manifest["config"])
    out["device"] = _get(manifest, ("device", "type")) or out.get("device")
    resolved = _get(manifest, ("strategy", "config"))
    if resolved is not None:
        out["strategy_params"] = resolved
    out["dataset fingerprint"] = _get(manifest, ("dataset", "fingerprint"))
    out["code version"] = _get(manifest, ("versions", "melonbench"))
    return out


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
