"""One online replay run end to end: dataset → checkpoint → strategy → replay → result store.

``run_experiment`` is what ``melonbench run`` calls. It checks everything it can before any work (names,
strategy/model compatibility, device, prepared dataset), re-uses a finished run as it is, and resumes an
interrupted one from its last checkpoint with an identical result. A run that fails once it has its folder leaves
a failure record there (``failure.json``: the stage, the online batch where known, the reason and the traceback);
``attempt_experiment`` returns that failure instead of raising, so that a grid can go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melonbench import __version__
from melonbench.core.config import PrepareOptions, PretrainConfig, RunConfig, config_hash, run_identity, to_jsonable
from melonbench.core.errors import DivergenceError, MelonbenchError, NotPreparedError
from melonbench.core.registry import lookup
from melonbench.data.prepare import prepare_dataset
from melonbench.data.store import PreparedDataset, load_dataset
from melonbench.models import MODELS
from melonbench.online.candidates import evaluation_negatives
from melonbench.online.cuda_graph import graph_report
from melonbench.online.determinism import deterministic
from melonbench.online.history import History
from melonbench.online.replay import BatchOutcome, replay, value_names
from melonbench.online.seeding import generator
from melonbench.online.stream import Stream, batch_spans
from melonbench.online.timing import Stopwatch, device_name, peak_memory_bytes, reset_peak_memory, untimed_batches
from melonbench.pipeline.batch_rows import batch_row, capture_learning_rates, progress_hr5, summarise
from melonbench.pipeline.meta_pretrain import load_or_train_meta
from melonbench.pipeline.pretrain import Checkpoint, load_or_pretrain
from melonbench.store.paths import results_dir, writable, writable_home
from melonbench.store.results import RunStore, git_commit
from melonbench.strategies import build_strategy, check_compatible, get_strategy
from melonbench.strategies.base import Strategy, parse_config


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What ``run_experiment`` reports back: where the run lives and its headline numbers."""

    run_id: str
    path: Path
    status: str  # "finished", "resumed" or "already complete"
    manifest: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RunFailure:
    """A run that failed after its folder was known: the record written there, and the exception itself."""

    run_id: str
    path: Path
    record: dict[str, Any]
    error: Exception


@dataclasses.dataclass
class _Attempt:
    """How far a run got (its folder, stage, failing batch, last checkpoint), so a failure is recorded where it
    happened."""

    store: RunStore | None = None
    stage: str = "set-up"  # then "pre-training", "meta pre-training", "replay"
    batch: int | None = None  # the online batch whose loss was non-finite
    checkpoint: int = 0  # batches covered by the run's last saved checkpoint (0: none)


class RunHooks:
    """Callbacks for progress display; the defaults do nothing (library use, tests).

    ``advance(done, split, running_hr5)`` comes after every few replayed batches: ``done`` batches are replayed,
    the last of them from ``split``, and ``running_hr5`` is :func:`progress_hr5` of the rows so far.
    ``stage(name)`` comes when a stage of a run begins: "pre-training" (after the dataset and its evaluation
    negatives are loaded), "set-up", "meta pre-training" (meta strategies only), "replay" (timing, e.g.
    ``benchmarks/grid_scale.py``).
    """

    def pretrain_epoch(self, epoch: int, loss: float, hr: float) -> None: ...
    def meta_batch(self, epoch: int, done: int, total: int) -> None: ...
    def start(self, total: int, done: int) -> None: ...
    def advance(self, done: int, split: str, running_hr5: float) -> None: ...
    def note(self, message: str) -> None: ...
    def stage(self, name: str) -> None: ...


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MelonbenchError("--device cuda was requested but no CUDA GPU is available (use --device cpu or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise MelonbenchError(f"--device must be auto, cpu or cuda, got '{name}'")
    return torch.device(name)


def load_or_generate(name: str) -> PreparedDataset:
    """Load a prepared dataset; a generated one (the synthetic default) is prepared on demand with defaults."""
    from melonbench.data.registry import DATASETS

    try:
        return load_dataset(name)
    except NotPreparedError:
        if name not in DATASETS or not DATASETS[name].generated:
            raise
    prepare_dataset(name, PrepareOptions())
    return load_dataset(name)


def dataset_fingerprint(dataset: PreparedDataset) -> str:
    """sha256 of the prepared interactions (from the card when it has it)."""
    card_sha = dataset.card.get("sha256", {})
    if isinstance(card_sha, dict) and card_sha.get("interactions.parquet"):
        return str(card_sha["interactions.parquet"])
    return hashlib.sha256((dataset.path / "interactions.parquet").read_bytes()).hexdigest()


def validate(config: RunConfig) -> None:
    """Every check that needs no data: names, compatibility, strategy settings (numbers are checked when the
    ``RunConfig`` is made)."""
    lookup("model", config.model, MODELS)
    check_compatible(config.strategy, config.model)
    parse_config(get_strategy(config.strategy).Config, config.settings())
    if config.protocol not in ("leakfree", "paper"):
        raise MelonbenchError(f"--protocol must be leakfree or paper, got '{config.protocol}'")
    if config.split not in ("validation", "test"):
        raise MelonbenchError(f"--split must be validation or test, got '{config.split}'")
    if config.pretrain.window < 1:
        raise MelonbenchError(f"--window must be at least 1, got {config.pretrain.window}")


def run_id_for(config: RunConfig, fingerprint: str, device: torch.device) -> str:
    """Readable prefix + hash of the run's identity: what can change its results (``RunConfig``'s docstring).

    The device enters as its type, the strategy settings (``--set`` and tuned ones) as the strategy's resolved
    config; the result-neutral fields (``checkpoint_every``, ``warmup``) are left out. A tuned run also keeps its
    ``tuned`` values (a tuned run is not the same run as one with the same ``--set``: the report tells them apart).
    """
    identity = run_identity(to_jsonable(dataclasses.replace(config, device=device.type), hashing=True))
    identity["strategy_params"] = to_jsonable(
        parse_config(get_strategy(config.strategy).Config, config.settings()), hashing=True
    )
    digest = config_hash(identity, fingerprint, __version__)
    c = config
    return f"{c.dataset}_{c.model}_{c.strategy}_seed{c.seed}_{c.protocol}_{c.split}_{digest[:10]}"


def pretrain_only(
    dataset_name: str,
    model: str,
    config: PretrainConfig,
    seed: int,
    device_name_: str = "auto",
    hooks: RunHooks | None = None,
    force: bool = False,
    n_negatives: int = 99,
) -> Checkpoint:
    """Pre-train (or find the cached) recommender checkpoint for ``(dataset, model, config, seed)``.

    ``n_negatives``: the sampled-protocol negatives of the validation HR@5 that picks the kept epoch (a run's).
    """
    hooks = hooks or RunHooks()
    lookup("model", model, MODELS)
    device = resolve_device(device_name_)
    writable_home()
    dataset = load_or_generate(dataset_name)
    with deterministic(device):
        stream = Stream.from_frame(dataset.interactions, device)
        leakfree, _ = evaluation_negatives(dataset.path, stream, seed, "leakfree", n_negatives)
        n_val = stream.validation_end - stream.pretrain_end
        fingerprint = dataset_fingerprint(dataset)
        return load_or_pretrain(
            model, stream, config, seed, fingerprint, leakfree[:n_val], hooks.pretrain_epoch, force=force
        )


def meta_pretrain_only(config: RunConfig, hooks: RunHooks | None = None) -> str | None:
    """Pre-train (or find the cached) meta-model of ``config``'s strategy, as :func:`run_experiment` would before
    its replay; return its cache key (``None`` for a strategy without a meta-model)."""
    hooks = hooks or RunHooks()
    validate(config)
    if not get_strategy(config.strategy).meta:
        return None
    checkpoint = pretrain_only(
        config.dataset, config.model, config.pretrain, config.seed, config.device, hooks, n_negatives=config.n_negatives
    )
    device = resolve_device(config.device)
    dataset = load_or_generate(config.dataset)
    with deterministic(device):
        stream = Stream.from_frame(dataset.interactions, device)
        strategy = build_strategy(config.strategy, checkpoint.model, config.settings(), config.seed)
        return _meta_model(strategy, config, stream, checkpoint.key, hooks)


def run_experiment(
    config: RunConfig,
    results_root: Path | None = None,
    hooks: RunHooks | None = None,
    tuning: dict[str, Any] | None = None,
) -> RunResult:
    """Replay one (dataset, model, strategy, seed) and store its per-batch results.

    Parameters
    ----------
    config : RunConfig
        The resolved run configuration.
    results_root : Path, optional
        Result store root (default ``$MELONBENCH_HOME/results``).
    hooks : RunHooks, optional
        Progress callbacks.
    tuning : dict, optional
        For a tuned run (``config.tuned``), which tuning chose its values (``pipeline.tune.tuned_config``):
        written to the manifest as ``tuning``, not part of the run's identity.

    Raises
    ------
    MelonbenchError
        Bad input (before any work), or a failure of the run (recorded in its folder first, see
        :func:`attempt_experiment`); any other exception is recorded the same way and raised as it is.
    """
    outcome = attempt_experiment(config, results_root, hooks, tuning)
    if isinstance(outcome, RunFailure):
        raise outcome.error
    return outcome


def attempt_experiment(
    config: RunConfig,
    results_root: Path | None = None,
    hooks: RunHooks | None = None,
    tuning: dict[str, Any] | None = None,
) -> RunResult | RunFailure:
    """:func:`run_experiment`, but a failure of the run is recorded in its folder and returned, not raised.

    A failure is any exception (``KeyboardInterrupt`` is not one: it stops at once, and the run resumes from its
    last checkpoint) raised once the run's folder is known; bad input found before any work, and a dataset that
    cannot be loaded, are raised as they are. The record (``failure.json``, written atomically) names the stage
    (``set-up``, ``pre-training``, ``meta pre-training`` or ``replay``), the online batch of a non-finite loss,
    the one-line reason, whether the error was an expected ``MelonbenchError``, and the traceback. It never makes
    the run look finished, and finishing the run later removes it.
    """
    hooks = hooks or RunHooks()
    validate(config)
    device = resolve_device(config.device)
    writable_home()  # before any work: the dataset, negatives and checkpoint are written there
    writable(results_root or results_dir(), "the result folder", "choose a writable folder with --results")
    attempt = _Attempt()
    try:
        with deterministic(device):
            return _run(config, device, results_root, hooks, attempt, tuning)
    except Exception as exc:
        if attempt.store is None:
            raise
        record = failure_record(config, device, attempt, exc)
        attempt.store.record_failure(record)
        return RunFailure(attempt.store.path.name, attempt.store.path, record, exc)


def stored_run(config: RunConfig, results_root: Path | None = None) -> tuple[RunStore, RunResult | None]:
    """The folder of ``config``'s run, and its result when it has finished (else None); runs nothing."""
    device = resolve_device(config.device)
    run_id = run_id_for(config, dataset_fingerprint(load_or_generate(config.dataset)), device)
    store = RunStore((results_root or results_dir()) / run_id)
    return store, RunResult(run_id, store.path, "already complete", store.manifest()) if store.is_complete() else None


def record_not_run(config: RunConfig, results_root: Path | None, stage: str, exc: Exception) -> RunFailure:
    """Record in its folder a run that was never started because what it needs failed in ``stage``
    (``pre-training`` or ``meta pre-training``, as a separate task of a grid): the record it would have written
    had it failed there itself."""
    store, _ = stored_run(config, results_root)
    device = resolve_device(config.device)
    record = failure_record(config, device, _Attempt(store, stage), exc)
    store.record_failure(record)
    return RunFailure(store.path.name, store.path, record, exc)


def failure_record(config: RunConfig, device: torch.device, attempt: _Attempt, exc: Exception) -> dict[str, Any]:
    """What ``failure.json`` holds for ``exc`` raised during ``attempt``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return {
        "status": "failed",
        "run_id": attempt.store.path.name if attempt.store is not None else None,
        "config": to_jsonable(config),
        "strategy": {"name": config.strategy, "label": get_strategy(config.strategy).label},
        "stage": attempt.stage,
        "batch": attempt.batch,
        "diverged": isinstance(exc, DivergenceError),
        "unexpected": not isinstance(exc, MelonbenchError),
        "error": type(exc).__name__,
        "reason": lines[0] if lines else type(exc).__name__,
        "traceback": "".join(traceback.format_exception(exc)),
        "checkpoint_batches": attempt.checkpoint or None,
        "device": {"type": device.type, "name": device_name(device)},
        "versions": {"melonbench": __version__, "torch": torch.__version__, "python": sys.version.split()[0]},
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _run(
    config: RunConfig,
    device: torch.device,
    results_root: Path | None,
    hooks: RunHooks,
    attempt: _Attempt,
    tuning: dict[str, Any] | None,
) -> RunResult:
    dataset = load_or_generate(config.dataset)
    fingerprint = dataset_fingerprint(dataset)
    run_id = run_id_for(config, fingerprint, device)
    store = RunStore((results_root or results_dir()) / run_id)
    attempt.store = store
    if store.is_complete():
        return RunResult(run_id, store.path, "already complete", store.manifest())

    stream = Stream.from_frame(dataset.interactions, device)
    leakfree, leakfree_sha = evaluation_negatives(dataset.path, stream, config.seed, "leakfree", config.n_negatives)
    if config.protocol == "paper":
        negatives, negatives_sha = evaluation_negatives(dataset.path, stream, config.seed, "paper", config.n_negatives)
    else:
        negatives, negatives_sha = leakfree, leakfree_sha
    n_val = stream.validation_end - stream.pretrain_end
    attempt.stage = "pre-training"
    hooks.stage(attempt.stage)
    checkpoint = load_or_pretrain(
        config.model, stream, config.pretrain, config.seed, fingerprint, leakfree[:n_val], hooks.pretrain_epoch
    )
    model = checkpoint.model
    attempt.stage = "set-up"
    hooks.stage(attempt.stage)
    strategy = build_strategy(config.strategy, model, config.settings(), config.seed)
    meta_key = None
    if strategy.meta:
        attempt.stage = "meta pre-training"
        hooks.stage(attempt.stage)
        meta_key = _meta_model(strategy, config, stream, checkpoint.key, hooks)
    strategy.capture_lr = config.capture_lr_every > 0
    attempt.stage = "replay"
    hooks.stage(attempt.stage)

    splits = ("validation",) if config.split == "validation" else ("validation", "test")
    spans = [(i, *span) for i, span in enumerate(batch_spans(stream, splits, config.batch_size))]
    if not spans:
        raise MelonbenchError(f"dataset '{config.dataset}' has no {' or '.join(splits)} interactions to replay")
    train_gen = generator(config.seed, "train-negatives", device)
    rows, state = store.load_progress()
    warmup, resumed_at = config.warmup, []
    if state is not None:
        model.load_state_dict(state["model"])
        strategy.load_state_dict(state["strategy"])
        train_gen.set_state(state["train_rng"])
        # The warm-up flags were fixed when the run started (warmup is not part of its identity, so a resume may
        # be asked with another value); where each process started is kept for the timing medians.
        warmup = int(state.get("warmup", warmup))
        resumed_at = [*state.get("resumed_at", ()), len(rows)]
    done = len(rows)
    attempt.checkpoint = done if state is not None else 0
    history = History(
        stream.users,
        stream.items,
        stream.n_users,
        stream.n_items,
        cursor=spans[done][2] if done < len(spans) else stream.n,
    )
    cold = torch.ones(stream.n_users, dtype=torch.bool, device=device)
    cold[stream.users[: stream.pretrain_end]] = False

    names = value_names(config.ks)
    ts = dataset.interactions["ts"].to_numpy()
    sw = Stopwatch(device)
    reset_peak_memory(device)
    started = time.perf_counter()
    hooks.start(len(spans), done)
    pending: list[BatchOutcome] = []
    ranks: dict[int, int] = {}

    def flush() -> None:
        values = torch.stack([o.values for o in pending]).cpu().numpy()  # one host copy per block
        for outcome, row in zip(pending, values):
            if not np.isfinite(row[names.index("loss")]):
                attempt.batch = outcome.index
                # Name the run's folder only when a checkpoint in it holds something to keep.
                kept = (
                    f"; the run's last checkpoint (after batch {attempt.checkpoint - 1}) is in {store.path}"
                    if attempt.checkpoint and store.has_checkpoint()
                    else ""
                )
                raise DivergenceError(f"the loss became non-finite at online batch {outcome.index}{kept}")
            # The run's first batches, whatever the process: a resumed run's rows equal an uninterrupted one's.
            rows.append(batch_row(outcome, row, names, ts, outcome.index < warmup))
            if strategy.capture_lr:
                rows[-1]["lr_rank"] = ranks.get(outcome.index)
        pending.clear()
        hooks.advance(len(rows), rows[-1]["split"], progress_hr5(rows))

    outcomes = replay(
        model,
        strategy,
        stream,
        history,
        spans[done:],
        negatives,
        stream.pretrain_end,
        train_gen,
        cold,
        ks=config.ks,
        paper_protocol=config.protocol == "paper",
        stopwatch=sw,
    )
    for outcome in outcomes:
        if strategy.capture_lr and outcome.index % config.capture_lr_every == 0:
            ranks[outcome.index] = capture_learning_rates(strategy, store.path, outcome.index)
        pending.append(outcome)
        if len(pending) >= min(10, config.checkpoint_every) or outcome.index == spans[-1][0]:
            flush()
        if len(rows) % config.checkpoint_every == 0 and not pending and len(rows) < len(spans):
            store.save_progress(
                rows,
                {
                    "batches_done": len(rows),
                    "model": model.state_dict(),
                    "strategy": strategy.state_dict(),
                    "train_rng": train_gen.get_state(),
                    "warmup": warmup,
                    "resumed_at": resumed_at,
                },
            )
            attempt.checkpoint = len(rows)

    fused = getattr(strategy, "fused", False)  # whether a strategy's own GPU kernels ran (MeLON's fused_role)
    manifest = {
        "run_id": run_id,
        "config": to_jsonable(dataclasses.replace(config, warmup=warmup)),
        "strategy": {
            "name": config.strategy,
            "label": get_strategy(config.strategy).label,
            "config": to_jsonable(strategy.config),
        },
        "protocol": config.protocol,
        "tuning": None if config.tuned is None else {"values": dict(config.tuned), **(tuning or {})},
        "dataset": {"name": config.dataset, "fingerprint": fingerprint, "card": dataset.card},
        "meta_checkpoint": meta_key,
        "checkpoint": {
            "key": checkpoint.key,
            "best_epoch": checkpoint.info.get("best_epoch"),
            "best_val_hr@5": checkpoint.info.get("best_val_hr@5"),
        },
        "negatives_sha256": negatives_sha,
        "device": {
            "type": device.type,
            "name": device_name(device),
            "peak_memory_bytes": peak_memory_bytes(device),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            # batches whose step was a CUDA graph replay (the others: warm-up and capture, or eager), or why none
            "cuda_graphs": dict(zip(("replays", "failure"), graph_report(strategy), strict=True)),
            "fused_kernels": fused,
        },
        "versions": {
            "melonbench": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            **({"triton": importlib.import_module("triton").__version__} if fused else {}),
        },
        "git_commit": git_commit(),
        "resumed_from_batch": done if state is not None else None,
        "resumed_at": resumed_at,  # the batch each resumed process started at (every resume, oldest first)
        "wall_s": time.perf_counter() - started,
        "summary": summarise(rows, config.split, untimed_batches(warmup, resumed_at)),
    }
    store.finish(rows, manifest)
    return RunResult(run_id, store.path, "resumed" if state is not None else "finished", manifest)


def _meta_model(strategy: Strategy, config: RunConfig, stream: Stream, checkpoint_key: str, hooks: RunHooks) -> str:
    """Give ``strategy`` its pre-trained meta-model (cached by key) for this run's settings; the cache key."""
    return load_or_train_meta(
        strategy,
        config.settings(),
        stream,
        checkpoint_key,
        config.seed,
        config.batch_size,
        hooks.meta_batch,
        hooks.note,
    )
