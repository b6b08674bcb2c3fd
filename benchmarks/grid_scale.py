"""A whole ``reproduce`` grid at the size of Yelp, timed stage by stage (issue 20).

The stream is the built-in synthetic generator at Yelp's size (60,543 users, 74,249 items, about 2.88 M
interactions; split 95 : 0.5 : 4.5, about 560 online batches of 256), prepared without a k-core filter (every
simulated user already has at least 20 interactions). ``--scale`` multiplies users and items (interactions follow),
so that the same script runs here in seconds. Then ``reproduce`` runs into a fresh store of its own (nothing
cached: every recommender is pre-trained and every meta-model meta-pre-trained), and the script prints where the
time went:

- **prepare**: generating and preparing the stream;
- **grid set-up**: ``reproduce`` checking the grid and naming its runs, before the first run;
- per run, from the run's stage hooks (``RunHooks.stage``): **load** (the dataset onto the device and its
  evaluation negatives, drawn by a seed's first run), **pre-training** (or loading the cached checkpoint),
  **set-up** (building the strategy), **meta pre-training**, and the **replay**, split with the run's own
  ``batches.parquet`` timing columns into **ranking** (``eval_s``) and **update** (``update_s``); the replay's
  rest (**other**: recording metrics, host copies, checkpoints, writing the results);
- **report**: from the last run's end to the end of ``reproduce`` (tables, figures).

The parts are timed independently of the total, so what they miss is printed as "unattributed".

``--quick`` runs 1 seed of ``default`` and ``melon`` (BPR and NCF, the references) with short pre-training and one
meta pre-training epoch, and extrapolates to the full grid (every strategy, 5 seeds, 100 pre-training epochs at
most, each strategy's own meta epochs) with :func:`extrapolate`: per-run figures × run counts, per-epoch figures ×
epochs; a strategy not measured takes the figures of a measured one (``melon`` for meta strategies, ``default``
for the others), its update and meta pre-training scaled by the ratio of per-batch update times when
``--per-batch`` gives ``strategy_speed.py --json`` figures measured on the same device.

    python benchmarks/grid_scale.py --quick --device cuda --per-batch speed.json     # one device call
    python benchmarks/grid_scale.py --device cuda                                    # the whole grid
    python benchmarks/grid_scale.py --quick --scale 0.003 --models bpr --epochs 1    # a smoke test, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

YELP_USERS, YELP_ITEMS = 60_543, 74_249
SPLIT = (95.0, 0.5, 4.5)
QUICK_STRATEGIES = ("default", "melon")
GPU_HOUR_TARGET_S = 3600.0
NAME = "synthetic-yelp"
PHASES = (
    "prepare",
    "grid set-up",
    "load",
    "pre-training",
    "set-up",
    "meta pre-training",
    "replay: ranking",
    "replay: update",
    "replay: other",
    "report",
)


def synthetic_settings(scale: float) -> tuple[tuple[str, str], ...]:
    """Generator settings for a Yelp-sized stream × ``scale``.

    Every user draws at least 20 interactions (Pareto, shape 1.63: 47.3 per user on average, as Yelp's 47.6);
    100 topics and a flatter within-topic popularity (Zipf 0.8) so that nearly every item is drawn. Measured at
    scale 1 (seed 0): 60,543 users, 73,955 items, 2,863,353 interactions, 29 s and 7.2 GB peak on the
    development CPU.
    """
    users, items = max(1, round(YELP_USERS * scale)), max(2, round(YELP_ITEMS * scale))
    values = {
        "users": users,
        "items": items,
        "topics": min(100, items),
        "zipf": 0.8,
        "min_activity": 20.0,
        "activity_shape": 1.63,
        "max_activity": max(1, min(500, items // 3)),  # a small scale keeps 99 negatives to draw from
    }
    return tuple((key, str(value)) for key, value in values.items())


@dataclasses.dataclass(frozen=True)
class RunFigures:
    """Seconds one run of the grid spent in each stage (see the module docstring)."""

    strategy: str
    model: str
    seed: int
    load: float
    pretrain: float
    pretrain_epochs: int  # epochs trained in this run (0: the checkpoint was cached, or a reference's count)
    pretrain_epoch_s: float  # seconds of one epoch after the first (the first's, when only one ran)
    setup: float
    meta: float
    meta_epochs: int  # meta pre-training epochs run (0: none, or cached)
    ranking: float
    update: float
    other: float
    batches: int

    @property
    def total(self) -> float:
        return self.load + self.pretrain + self.setup + self.meta + self.ranking + self.update + self.other


class StageClock:
    """Run hooks that note when each stage of a run begins, its pre-training and meta epochs, and its end."""

    def __init__(self, label: str, sync) -> None:
        self.label, self.sync = label, sync
        self.stages: dict[str, float] = {}
        self.entered = self.exited = 0.0
        self.epochs: list[float] = []  # when each pre-training epoch ended
        self.meta_epochs = 0

    def _now(self) -> float:
        self.sync()  # CUDA: the stage's kernels are done before its time is read
        return time.perf_counter()

    def __enter__(self) -> StageClock:
        self.entered = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.exited = self._now()
        # as each run ends, so that a call cut short by its time limit still says how far it got
        stages = " ".join(f"{name} +{at - self.entered:.1f}" for name, at in self.stages.items())
        print(f"  {self.label}: {self.exited - self.entered:.1f} s ({stages})", file=sys.stderr, flush=True)

    def stage(self, name: str) -> None:
        self.stages[name] = self._now()

    def pretrain_epoch(self, epoch: int, loss: float, hr: float) -> None:
        self.epochs.append(self._now())

    def meta_batch(self, epoch: int, done: int, total: int) -> None:
        self.meta_epochs += done == total

    def start(self, total: int, done: int) -> None: ...
    def advance(self, done: int, split: str, running_hr5: float) -> None: ...
    def note(self, message: str) -> None: ...

    @property
    def seconds(self) -> float:
        return self.exited - self.entered

    def figures(
        self,
        strategy: str,
        model: str,
        seed: int,
        batches: Any,
        pretrain: StageClock | None = None,
        meta: StageClock | None = None,
    ) -> RunFigures:
        """This run's figures; ``batches`` is its ``batches.parquet`` (columns ``eval_s``, ``update_s``).

        The grid runs a recommender's pre-training and a meta-model's as tasks of their own before the run
        (``pipeline.tasks``): ``pretrain`` and ``meta`` are their clocks, for the first run that needed them (None
        after: the run loads the cached result, inside its own stages).
        """
        s = self.stages
        after_setup = s.get("meta pre-training", s["replay"])
        replay = self.exited - s["replay"]
        ranking, update = float(batches["eval_s"].sum()), float(batches["update_s"].sum())
        trained = pretrain.epochs if pretrain is not None else []
        return RunFigures(
            strategy,
            model,
            seed,
            load=s["pre-training"] - self.entered,
            pretrain=s["set-up"] - s["pre-training"] + (pretrain.seconds if pretrain is not None else 0.0),
            pretrain_epochs=len(trained),
            pretrain_epoch_s=_epoch_seconds(pretrain.entered, trained) if pretrain is not None else 0.0,
            setup=after_setup - s["set-up"],
            meta=s["replay"] - after_setup + (meta.seconds if meta is not None else 0.0),
            meta_epochs=meta.meta_epochs if meta is not None else 0,
            ranking=ranking,
            update=update,
            other=replay - ranking - update,
            batches=batches.height,
        )


def _epoch_seconds(began: float, ends: list[float]) -> float:
    """The median epoch after the first (which also pays for warming up), or the first when it is alone."""
    if not ends:
        return 0.0
    if len(ends) == 1:
        return ends[0] - began
    return statistics.median(b - a for a, b in zip(ends, ends[1:]))


def breakdown(runs: list[RunFigures], prepare: float, grid_setup: float, report: float) -> dict[str, float]:
    """Seconds per phase of :data:`PHASES`, summed over the runs."""
    return {
        "prepare": prepare,
        "grid set-up": grid_setup,
        "load": sum(r.load for r in runs),
        "pre-training": sum(r.pretrain for r in runs),
        "set-up": sum(r.setup for r in runs),
        "meta pre-training": sum(r.meta for r in runs),
        "replay: ranking": sum(r.ranking for r in runs),
        "replay: update": sum(r.update for r in runs),
        "replay: other": sum(r.other for r in runs),
        "report": report,
    }


def extrapolate(
    measured: list[RunFigures],
    grid: list[tuple[str, str, int]],
    meta_strategies: set[str],
    meta_epochs: dict[str, int],
    pretrain_epochs: int,
    prepare: float,
    grid_setup: float,
    report: float,
    per_batch: dict[tuple[str, str], float] | None = None,
) -> tuple[dict[str, float], list[str]]:
    """Seconds per phase of a full grid, from the runs of a smaller one (one seed, fewer strategies and epochs).

    Parameters
    ----------
    measured : list[RunFigures]
        The runs measured, in the order they ran (seed 0 only).
    grid : list[tuple[str, str, int]]
        ``(strategy, model, seed)`` of every run of the full grid.
    meta_strategies : set[str]
        Strategies with a meta-model.
    meta_epochs : dict[str, int]
        Meta pre-training epochs of each meta strategy in the full grid.
    pretrain_epochs : int
        Pre-training epochs of each learned recommender in the full grid (early stopping may stop sooner).
    prepare, grid_setup, report : float
        Measured once; the report is scaled by the number of runs (it reads every run).
    per_batch : dict, optional
        ``(strategy, model) -> seconds per batch of the update`` (``strategy_speed.py``); scales a stand-in's
        update and meta pre-training to the strategy it stands for.

    Returns
    -------
    (dict, list[str])
        Seconds per phase, and one line per assumption made (stand-ins, unscaled figures).

    The arithmetic: per (model, seed), the model is pre-trained once: the measured pre-training plus
    ``(pretrain_epochs − epochs measured) × seconds per epoch`` of the run that trained it; every other run of
    that model loads the cached checkpoint (the median of the measured loads). Per seed, its first run draws the
    evaluation negatives (the first measured run's load beyond the others' median); every run pays the median
    load. A run's set-up, ranking, update and other come from its own measured run, or from a stand-in's; its
    meta pre-training is the measured seconds per meta epoch × its meta epochs (× the per-batch ratio for a
    stand-in).
    """
    notes: list[str] = []
    by_pair = {(r.strategy, r.model): r for r in measured}
    trained = {r.model: r for r in measured if r.pretrain_epochs > 0}
    cached = [r.pretrain for r in measured if r.pretrain_epochs == 0 and r.model in trained]
    cached_load = statistics.median(cached) if cached else 0.0
    loads = [r.load for r in measured[1:]] or [measured[0].load]
    load = statistics.median(loads)
    first_extra = max(0.0, measured[0].load - load)
    out = dict.fromkeys(PHASES, 0.0)
    out.update({"prepare": prepare, "grid set-up": grid_setup})
    out["report"] = report * len(grid) / len(measured)
    seeds = {seed for _, _, seed in grid}
    out["load"] = first_extra * len(seeds) + load * len(grid)
    first_of: set[tuple[str, int]] = set()
    for strategy, model, seed in grid:
        proxy = strategy if (strategy, model) in by_pair else _stand_in(strategy, model, by_pair, meta_strategies)
        if proxy is None:
            raise ValueError(f"no measured run of {model} to stand in for {strategy}")
        run = by_pair[(proxy, model)]
        ratio = 1.0
        if proxy != strategy:
            known = per_batch is not None and (strategy, model) in per_batch and (proxy, model) in per_batch
            ratio = per_batch[(strategy, model)] / per_batch[(proxy, model)] if known else 1.0
            notes.append(
                f"{strategy}/{model}: {proxy}'s figures"
                + (f", update and meta pre-training × {ratio:.2f} (per-batch update)" if known else ", unscaled")
            )
        if model in trained and (model, seed) not in first_of:
            first_of.add((model, seed))
            first = trained[model]
            out["pre-training"] += first.pretrain + (pretrain_epochs - first.pretrain_epochs) * first.pretrain_epoch_s
        elif model in trained:
            out["pre-training"] += cached_load
        else:  # a reference: its own measured "pre-training" (counting the pre-training part)
            out["pre-training"] += run.pretrain
        if strategy in meta_strategies and run.meta_epochs > 0:
            out["meta pre-training"] += run.meta / run.meta_epochs * meta_epochs[strategy] * ratio
        out["set-up"] += run.setup
        out["replay: ranking"] += run.ranking
        out["replay: update"] += run.update * ratio
        out["replay: other"] += run.other
    return out, sorted(set(notes))


def _stand_in(strategy, model, by_pair, meta_strategies) -> str | None:
    """A measured strategy of ``model`` to stand in: ``melon`` (or another meta one) for a meta strategy, else
    ``default`` (or another without a meta-model)."""
    meta = strategy in meta_strategies
    preferred = ["melon" if meta else "default"] + sorted(s for s, m in by_pair if m == model)
    return next((s for s in preferred if (s, model) in by_pair and (s in meta_strategies) == meta), None)


def run_grid(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """Prepare the stream, run and time the grid in ``home`` (a fresh ``MELONBENCH_HOME``); return the figures."""
    os.environ["MELONBENCH_HOME"] = str(home)
    import polars as pl
    import torch

    from melonbench.core.config import PrepareOptions, PretrainConfig, RunConfig
    from melonbench.data.prepare import prepare_dataset
    from melonbench.data.store import load_card
    from melonbench.online.timing import device_name
    from melonbench.pipeline.engines import Engine
    from melonbench.pipeline.experiment import resolve_device
    from melonbench.pipeline.reproduce import GridHooks, ReproduceConfig, grid, reproduce
    from melonbench.store.results import git_commit
    from melonbench.strategies import STRATEGIES

    device = resolve_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    models = tuple(args.models.split(","))
    strategies = tuple(args.strategies.split(",")) if args.strategies else (QUICK_STRATEGIES if args.quick else None)
    references = () if args.references == "none" else tuple(args.references.split(","))
    names = strategies or tuple(STRATEGIES)
    meta_names = {n for n in STRATEGIES if STRATEGIES[n].meta}
    settings = (("meta_epochs", str(args.meta_epochs)),) if args.meta_epochs and meta_names & set(names) else ()

    started = time.perf_counter()
    options = PrepareOptions(core=1, split=SPLIT, name=NAME, params=synthetic_settings(args.scale), force=True)
    prepare_dataset("synthetic", options)
    prepared = time.perf_counter()
    print(f"  prepared in {prepared - started:.1f} s", file=sys.stderr, flush=True)
    card = load_card(NAME)

    base = RunConfig(dataset=NAME, device=device.type, pretrain=PretrainConfig(epochs=args.epochs))
    config = ReproduceConfig(
        base=base,
        models=models,
        strategies=strategies,
        references=references,
        seeds=args.seeds,
        results=home / "grid-results",
        out=home / "grid-report",
        settings=settings,
        engine=Engine(jobs=1),  # in this process, one task after another: each task's stages are timed here
    )
    clocks: dict[str, StageClock] = {}  # every task's clock, by task key, in the order they ran
    run_tasks: list[Any] = []
    pretrained: dict[tuple[str, int], str] = {}  # (model, seed) -> key of the pre-training task that ran

    class Clocks(GridHooks):
        """Each task's clock (the grid runs in this process, one task after another: ``Engine(jobs=1)``)."""

        def task(self, task: Any) -> StageClock:
            clocks[task.key] = StageClock(f"{task.kind} {task.config.strategy}/{task.config.model}", sync)
            if task.kind == "run":
                run_tasks.append(task)
            if task.kind == "pretrain":
                pretrained[(task.config.model, task.config.seed)] = task.key
            return clocks[task.key]

    began = time.perf_counter()
    result = reproduce(config, hooks=Clocks())
    ended = time.perf_counter()
    if result.failures:
        raise SystemExit(f"{len(result.failures)} run(s) of the grid failed: {[f.what() for f in result.failures]}")
    runs, attributed = [], set()
    for task, outcome in zip(run_tasks, result.runs, strict=True):
        c = outcome.manifest["config"]
        batches = pl.read_parquet(outcome.path / "batches.parquet", columns=["eval_s", "update_s"])
        # the pre-training and meta-model tasks count for the first run that needed them
        pre, meta = pretrained.get((c["model"], c["seed"])), task.needs[0] if task.needs[0] in clocks else None
        pre_clock = clocks[pre] if pre is not None and pre not in attributed else None
        meta_clock = clocks[meta] if meta is not None and meta.startswith("meta-") and meta not in attributed else None
        attributed.update(k for k in (pre, meta) if k is not None)
        runs.append(clocks[task.key].figures(c["strategy"], c["model"], c["seed"], batches, pre_clock, meta_clock))
    first, last = next(iter(clocks.values())), clocks[run_tasks[-1].key]
    phases = breakdown(runs, prepared - started, first.entered - began, ended - last.exited)
    total = ended - started
    figures: dict[str, Any] = {
        "device": device_name(device),
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:],
        "store": str(home),
        "stream": {k: card.get(k) for k in ("users", "items", "interactions", "splits")},
        "online_batches": runs[0].batches,
        "runs": [dataclasses.asdict(r) for r in runs],
        "breakdown_s": phases,
        "total_s": total,
        "unattributed_s": total - sum(phases.values()),
    }
    if args.quick:
        full = ReproduceConfig(base=base, models=models, seeds=args.full_seeds, references=references)
        full_runs, _ = grid(full)
        per_batch = _per_batch(args.per_batch) if args.per_batch else None
        meta_epochs = {
            n: int(getattr(STRATEGIES[n].Config(), "meta_epochs", 1))
            for n in sorted({r.strategy for r in full_runs} & meta_names)
        }
        estimate, notes = extrapolate(
            runs,
            [(r.strategy, r.model, r.seed) for r in full_runs],
            meta_names,
            meta_epochs,
            args.full_epochs,
            phases["prepare"],
            phases["grid set-up"],
            phases["report"],
            per_batch,
        )
        figures["full_grid"] = {
            "runs": len(full_runs),
            "seeds": args.full_seeds,
            "pretrain_epochs": args.full_epochs,
            "meta_epochs": meta_epochs,
            "breakdown_s": estimate,
            "total_s": sum(estimate.values()),
            "assumptions": notes,
        }
    return figures


def _per_batch(path: str) -> dict[tuple[str, str], float]:
    """``strategy_speed.py --json`` rows → ``(strategy, model) -> update seconds`` (plain strategies only)."""
    rows = json.loads(Path(path).read_text())
    return {(r["strategy"], r["model"]): r["update_s"] for r in rows if "@" not in r["strategy"]}


def render(figures: dict[str, Any]) -> str:
    """The breakdown (and the extrapolation, if any) as text."""
    s = figures["stream"]
    lines = [
        f"device: {figures['device']} (torch {figures['torch']}, commit {figures['git_commit']})",
        f"stream: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions, "
        f"{figures['online_batches']} online batches; {len(figures['runs'])} runs",
        "",
        "| run | load | pre-training (epochs) | set-up | meta (epochs) | ranking | update | other | total |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in figures["runs"]:
        total = sum(r[k] for k in ("load", "pretrain", "setup", "meta", "ranking", "update", "other"))
        lines.append(
            f"| {r['strategy']}/{r['model']} seed {r['seed']} | {r['load']:.1f} | {r['pretrain']:.1f} "
            f"({r['pretrain_epochs']}) | {r['setup']:.1f} | {r['meta']:.1f} ({r['meta_epochs']}) | {r['ranking']:.1f} "
            f"| {r['update']:.1f} | {r['other']:.1f} | {total:.1f} |"
        )
    lines += ["", "| phase | measured (s) |" + (" full grid, extrapolated (s) |" if "full_grid" in figures else "")]
    lines.append("|---|---|" + ("---|" if "full_grid" in figures else ""))
    full = figures.get("full_grid")
    for phase, seconds in figures["breakdown_s"].items():
        lines.append(f"| {phase} | {seconds:.1f} |" + (f" {full['breakdown_s'][phase]:.1f} |" if full else ""))
    lines.append(f"| unattributed | {figures['unattributed_s']:.1f} |" + (" |" if full else ""))
    lines.append(f"| **total** | **{figures['total_s']:.1f}** |" + (f" **{full['total_s']:.0f}** |" if full else ""))
    grid_s = full["total_s"] if full else figures["total_s"]
    if full:
        lines += [
            "",
            f"full grid: {full['runs']} runs ({full['seeds']} seeds), pre-training {full['pretrain_epochs']} epochs "
            f"per recommender (an upper bound: early stopping may end it sooner), meta epochs {full['meta_epochs']}",
            *(f"  assumed: {note}" for note in full["assumptions"]),
        ]
    status = "met" if grid_s <= GPU_HOUR_TARGET_S else "not met"
    where = "" if figures["device"].startswith(("NVIDIA H100", "NVIDIA H200")) else " (the target is for an H100/H200)"
    lines.append(f"\ntarget: whole grid <= 1 GPU-hour: {grid_s / 3600:.2f} h, {status}{where}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed of default and melon, then extrapolate")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Yelp's users and items (default 1)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--models", default="bpr,ncf")
    parser.add_argument("--strategies", help="comma-separated (default: all; with --quick: default,melon)")
    parser.add_argument("--references", default="pop,recent-pop", help="comma-separated, or none")
    parser.add_argument("--seeds", type=int, help="seeds run (default 5; with --quick 1)")
    parser.add_argument("--epochs", type=int, help="pre-training epochs run (default 100; with --quick 2)")
    parser.add_argument(
        "--meta-epochs", type=int, help="meta pre-training epochs run (default: each strategy's; --quick 1)"
    )
    parser.add_argument("--full-seeds", type=int, default=5, help="--quick: seeds of the full grid")
    parser.add_argument("--full-epochs", type=int, default=100, help="--quick: pre-training epochs of the full grid")
    parser.add_argument("--per-batch", help="--quick: strategy_speed.py --json figures, to scale stand-ins")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--workdir", type=Path, help="where the fresh store is made (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the store (stream, checkpoints, runs) afterwards")
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (1 if args.quick else 5)
    args.epochs = args.epochs or (2 if args.quick else 100)
    args.meta_epochs = args.meta_epochs if args.meta_epochs is not None else (1 if args.quick else 0)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="grid-scale-", dir=args.workdir))
    try:
        figures = run_grid(args, home)
    finally:
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    print(render(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
