"""The ``melonbench`` command line: each command turns its options into one config and calls one library function."""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, get_args

import typer
from rich.console import Console
from rich.markup import escape

from melonbench import __version__
from melonbench.core.config import CoreMode, Dedupe, PrepareOptions, PretrainConfig, Protocol, RunConfig, Split
from melonbench.core.errors import MelonbenchError

app = typer.Typer(
    name="melonbench",
    help="Benchmark online update strategies for recommender systems (MeLON, AAAI 2022, and its baselines).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _choices(name: str, values: Iterable[str]) -> Any:
    """A ``str`` Enum of ``values``: Typer lists them in ``--help`` and shell completion and refuses any other."""
    return enum.Enum(name, [(v, v) for v in values], type=str)


# Options with a fixed set of values. The registries (datasets, models, strategies) stay free names: they are
# looked up with "did you mean", complete from the registry, and a new entry needs no change here.
CoreModeChoice = _choices("CoreModeChoice", get_args(CoreMode))
DedupeChoice = _choices("DedupeChoice", get_args(Dedupe))
ProtocolChoice = _choices("ProtocolChoice", get_args(Protocol))
SplitChoice = _choices("SplitChoice", get_args(Split))
DeviceChoice = _choices("DeviceChoice", ("auto", "cpu", "cuda"))  # experiment.resolve_device
RankingChoice = _choices("RankingChoice", ("full", "sampled", "both"))  # report.build.RANKING_SETS
ObjectiveChoice = _choices("ObjectiveChoice", ("full", "sampled"))  # pipeline.tune.RANKINGS
EngineChoice = _choices("EngineChoice", ("local", "ray"))  # pipeline.engines.ENGINES


def _complete(kind: str) -> Callable[[str], list[str]]:
    """Shell completion of a registry's names (imported only when a shell asks)."""

    def complete(incomplete: str) -> list[str]:
        if kind == "dataset":
            from melonbench.data.registry import DATASETS as names
        elif kind == "model":
            from melonbench.models import MODELS as names
        else:
            from melonbench.strategies import STRATEGIES as names
        return [name for name in names if name.startswith(incomplete)]

    return complete


def _out() -> Console:
    """The console of a command's results (stdout). A table that a script or a log file reads stays whole: off a
    terminal, rich would otherwise squeeze it to 80 columns (``strate…``); lines are then as long as they need."""
    out = Console()
    return out if out.is_terminal else Console(width=100_000)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"melonbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Benchmark online update strategies for recommender systems."""


def _parse_split(split: str | None) -> tuple[float, float, float] | None:
    if split is None:
        return None
    parts = split.split(":")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise MelonbenchError(f"--split must look like 80:2:18, got '{split}'") from None
    if len(values) != 3:
        raise MelonbenchError(f"--split needs three parts (pre-train:validation:test), got '{split}'")
    if any(v < 0 for v in values) or abs(sum(values) - 100.0) > 1e-9:
        raise MelonbenchError(f"--split parts must be non-negative and sum to 100, got '{split}' (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def _parse_params(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MelonbenchError(f"--set expects key=value, got '{item}'")
        out.append((key.strip(), value.strip()))
    return tuple(out)


@app.command()
def prepare(
    dataset: Annotated[
        str, typer.Argument(help="Registry name (see `melonbench datasets`).", autocompletion=_complete("dataset"))
    ] = "synthetic",
    input: Annotated[
        list[Path] | None, typer.Option("--input", "-i", help="Local raw file(s) instead of downloading.")
    ] = None,
    core: Annotated[int, typer.Option(help="k of the k-core filter on users and items.")] = 20,
    core_mode: Annotated[
        CoreModeChoice,
        typer.Option(help="single: counts taken once on the de-duplicated input; iterative: to a fixpoint."),
    ] = CoreModeChoice.single,
    dedupe: Annotated[
        DedupeChoice, typer.Option(help="first: earliest repeat of a (user, item); keep: all.")
    ] = DedupeChoice.first,
    split: Annotated[
        str | None, typer.Option(help="pre-train:validation:test percentages, e.g. 80:2:18 (default: the dataset's).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Prepare again even if an identical preparation exists.")] = False,
    name: Annotated[str | None, typer.Option(help="Store under this name (required for `csv`).")] = None,
    columns: Annotated[
        str | None, typer.Option(help="csv only: user,item,ts as header names or 0-based positions.")
    ] = None,
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the download.")] = None,
    insecure: Annotated[bool, typer.Option(help="Download without TLS verification (explicit opt-in).")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Reader setting key=value (e.g. synthetic: users=2000).")
    ] = None,
) -> None:
    """Download (or read --input), filter, order by time, split, and write Parquet plus a dataset card."""
    options = PrepareOptions(
        inputs=tuple(input or ()),
        core=core,
        core_mode=core_mode.value,
        dedupe=dedupe.value,
        split=_parse_split(split),
        force=force,
        name=name,
        columns=columns,
        sha256=sha256,
        insecure=insecure,
        params=_parse_params(set_),
    )
    from melonbench.data.prepare import prepare_dataset

    prepare_dataset(dataset, options, console=console)


@app.command()
def datasets(
    show: Annotated[str | None, typer.Option(help="Print the card of this prepared dataset.")] = None,
) -> None:
    """List the dataset registry and what is prepared locally."""
    from melonbench.data.catalog import print_card, print_catalog

    if show is None:
        print_catalog(_out())
    else:
        print_card(show, _out())


@app.command()
def strategies(
    show: Annotated[
        str | None,
        typer.Option(
            help="Print this strategy's settings (--set KEY=VALUE) with their defaults.",
            autocompletion=_complete("strategy"),
        ),
    ] = None,
) -> None:
    """List the update strategies (label, models, meta-model, description) and the recommenders they run on."""
    from melonbench.strategies.catalog import print_settings, print_strategies

    if show is None:
        print_strategies(_out())
    else:
        print_settings(show, _out())


Dataset = Annotated[str, typer.Option("--dataset", "-d", help="Prepared dataset name.")]
Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Recommender: bpr or ncf; pop or recent-pop (references without learning); see `melonbench strategies`.",
        autocompletion=_complete("model"),
    ),
]
Device = Annotated[
    DeviceChoice, typer.Option(help="auto: CUDA when present (pick a GPU with CUDA_VISIBLE_DEVICES), else the CPU.")
]
Epochs = Annotated[int, typer.Option(help="Pre-training epochs (maximum; early stopping on validation HR@5).")]
Lr = Annotated[float, typer.Option("--lr", help="Pre-training learning rate (Adam).")]
WeightDecay = Annotated[
    float, typer.Option(help="Pre-training weight decay (Adam L2; paper: 1e-3, see docs/protocol.md).")
]
Patience = Annotated[int, typer.Option(help="Pre-training epochs without validation improvement before stopping.")]


@app.command()
def pretrain(
    dataset: Dataset = "synthetic",
    model: Model = "bpr",
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and training negatives.")] = 0,
    epochs: Epochs = 100,
    lr: Lr = 1e-3,
    weight_decay: WeightDecay = 0.0,
    patience: Patience = 10,
    device: Device = DeviceChoice.auto,
    force: Annotated[bool, typer.Option(help="Pre-train again even if the checkpoint exists.")] = False,
) -> None:
    """Pre-train a recommender on the pre-training part (cached by content hash; `run` does this on demand)."""
    from melonbench.pipeline import experiment
    from melonbench.pipeline.progress import progress_hooks

    config = PretrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience)
    with progress_hooks(console, f"{model} on {dataset}, seed {seed}") as hooks:
        ckpt = experiment.pretrain_only(dataset, model, config, seed, device.value, hooks=hooks, force=force)
    best = ckpt.info.get("best_val_hr@5")
    console.print(
        f"checkpoint {ckpt.path}  (best epoch {ckpt.info.get('best_epoch')}, validation HR@5 "
        f"{'n/a' if best is None else f'{best:.4f}'})"
    )


@app.command()
def run(
    dataset: Dataset = "synthetic",
    model: Model = "bpr",
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            help="Update strategy (default: default; count for pop models); see `melonbench strategies`.",
            autocompletion=_complete("strategy"),
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of this run.")] = 0,
    seeds: Annotated[int | None, typer.Option(help="Run seeds 0..N-1 instead of --seed.")] = None,
    device: Device = DeviceChoice.auto,
    split: Annotated[
        SplitChoice, typer.Option(help="validation (replay it alone) or test (validation, then test).")
    ] = SplitChoice.test,
    protocol: Annotated[
        ProtocolChoice, typer.Option(help="leakfree, or paper (the published setting, leaks included).")
    ] = ProtocolChoice.leakfree,
    batch_size: Annotated[int, typer.Option(help="Online batch size.")] = 256,
    negatives: Annotated[int, typer.Option(help="Negatives per interaction of the sampled ranking.")] = 99,
    k: Annotated[list[int] | None, typer.Option("--k", help="Extra cut-off for HR/NDCG (5, 10, 20 always).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Strategy setting key=value.")] = None,
    sparse_updates: Annotated[bool, typer.Option(help="Update only the rows a batch touches (lazy Adam).")] = False,
    warmup: Annotated[int, typer.Option(help="Batches flagged as timing warm-up.")] = 3,
    checkpoint_every: Annotated[int, typer.Option(help="Batches between resumable checkpoints.")] = 50,
    results: Annotated[Path | None, typer.Option(help="Result store (default $MELONBENCH_HOME/results).")] = None,
    capture_lr: Annotated[
        int, typer.Option(help="Store the learning-rate matrix of every N-th batch (0: off) with its rank.")
    ] = 0,
    epochs: Epochs = 100,
    lr: Lr = 1e-3,
    weight_decay: WeightDecay = 0.0,
    patience: Patience = 10,
    window: Annotated[int, typer.Option(help="recent-pop only: W, the number of latest interactions counted.")] = 256,
    tuned: Annotated[
        bool, typer.Option("--tuned", help="Use the settings `melonbench tune` chose on validation (stored).")
    ] = False,
) -> None:
    """Replay the online part prequentially (rank each batch, then update) and store per-batch results."""
    from melonbench.pipeline import experiment
    from melonbench.pipeline.progress import progress_hooks
    from melonbench.pipeline.tune import tuned_config
    from melonbench.strategies import default_strategy
    from melonbench.strategies.space import describe

    if seeds is not None and seeds < 1:
        raise MelonbenchError(f"--seeds must be at least 1 (it runs seeds 0..N-1), got {seeds}")
    params = _parse_params(set_)
    strategy = strategy or default_strategy(model)
    if sparse_updates:
        from melonbench.strategies import get_strategy

        fields = {f.name for f in dataclasses.fields(get_strategy(strategy).Config)}
        if "sparse" not in fields:
            raise MelonbenchError(f"--sparse-updates does not apply to '{strategy}': it has no dense/sparse choice")
        params += (("sparse", "true"),)
    base = RunConfig(
        dataset=dataset,
        model=model,
        strategy=strategy,
        seed=seed,
        device=device.value,
        split=split.value,
        protocol=protocol.value,
        batch_size=batch_size,
        n_negatives=negatives,
        ks=tuple(sorted({5, 10, 20, *(k or [])})),
        warmup=warmup,
        strategy_params=params,
        pretrain=PretrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience, window=window),
        checkpoint_every=checkpoint_every,
        capture_lr_every=capture_lr,
    )
    configs = [base] if seeds is None else [dataclasses.replace(base, seed=s) for s in range(seeds)]
    for config in configs:
        experiment.validate(config)  # every config is checked before the first one starts
    provenance: dict | None = None
    if tuned:  # one tuning per (dataset, model, strategy, settings): the same values for every seed
        chosen, provenance = tuned_config(configs[0], results)
        configs = [dataclasses.replace(c, tuned=chosen.tuned) for c in configs]
        console.print(f"tuned settings: {describe(chosen.tuned or ())}", highlight=False)
    outcomes = []
    for config in configs:
        label = f"{config.strategy}/{config.model} seed {config.seed}"
        with progress_hooks(console, label) as hooks:
            outcomes.append(experiment.run_experiment(config, results, hooks, tuning=provenance))
    from melonbench.pipeline.summaries import print_runs

    print_runs(outcomes, _out(), console)


EngineOption = Annotated[
    EngineChoice,
    typer.Option(
        help="local: worker processes on this machine (--jobs); ray: Ray tasks, on a local Ray instance or on the "
        "cluster at --address (pip install 'melonbench[ray]')."
    ),
]
JobsOption = Annotated[
    int | None,
    typer.Option(
        help="local: worker processes (default: 1 on a CPU with 2 cores or fewer, else half the cores; 4 on a GPU); "
        "ray without --address: CPUs of the local Ray instance."
    ),
]
AddressOption = Annotated[
    str | None, typer.Option(help="ray: address of a running Ray cluster (`ray start --head` prints it).")
]


def _engine(name: str, jobs: int | None, address: str | None):
    from melonbench.pipeline.engines import Engine

    engine = Engine(name=name, jobs=jobs, address=address)
    engine.check()
    return engine


@app.command()
def tune(
    dataset: Dataset = "synthetic",
    model: Model = "bpr",
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy",
            "-s",
            help="Strategy to tune (default: the model's default).",
            autocompletion=_complete("strategy"),
        ),
    ] = None,
    budget: Annotated[
        int, typer.Option(help="Most trials (points of the search space); the default settings are always one.")
    ] = 16,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 per trial; the objective is their mean.")] = 2,
    ranking: Annotated[
        ObjectiveChoice, typer.Option(help="Objective: validation HR@5 under full or sampled ranking.")
    ] = ObjectiveChoice.full,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Fixed strategy setting key=value (not a searched one).")
    ] = None,
    device: Device = DeviceChoice.auto,
    batch_size: Annotated[int, typer.Option(help="Online batch size.")] = 256,
    negatives: Annotated[int, typer.Option(help="Negatives per interaction of the sampled ranking.")] = 99,
    results: Annotated[Path | None, typer.Option(help="Result store (default $MELONBENCH_HOME/results).")] = None,
    epochs: Epochs = 100,
    lr: Lr = 1e-3,
    weight_decay: WeightDecay = 0.0,
    patience: Patience = 10,
    list_: Annotated[bool, typer.Option("--list", help="Print every strategy's search space and exit.")] = False,
    engine: EngineOption = EngineChoice.local,
    jobs: JobsOption = None,
    address: AddressOption = None,
) -> None:
    """Choose a strategy's online settings on the validation part (never the test part); `run --tuned` uses them.

    Each trial replays the validation part only, for seeds 0..N-1, from the shared checkpoints; the best mean
    validation HR@5 wins, ties going to the smaller change from the default. Finished tunings are re-used and
    interrupted ones resume. `--list` prints the search spaces (docs/baselines.md, "Tuning on the validation split").
    """
    from melonbench.pipeline.progress import RichTuneHooks
    from melonbench.pipeline.tune import TuneConfig
    from melonbench.pipeline.tune import tune as run_tune
    from melonbench.strategies import default_strategy

    if list_:
        from melonbench.pipeline.summaries import print_spaces

        print_spaces(_out())
        return
    base = RunConfig(
        dataset=dataset,
        model=model,
        strategy=strategy or default_strategy(model),
        device=device.value,
        batch_size=batch_size,
        n_negatives=negatives,
        strategy_params=_parse_params(set_),
        pretrain=PretrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience),
    )
    engine_ = _engine(engine.value, jobs, address)
    config = TuneConfig(base=base, budget=budget, seeds=seeds, ranking=ranking.value, results=results, engine=engine_)
    with RichTuneHooks(console) as hooks:
        result = run_tune(config, hooks)
    from melonbench.pipeline.summaries import print_tuning

    print_tuning(result, base, _out(), console)


@app.command()
def report(
    results_dir: Annotated[
        Path | None, typer.Argument(help="Result store to read (default $MELONBENCH_HOME/results).")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", "-d", help="Only this dataset (repeatable; default: all).")
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown instead of the terminal tables.")] = False,
    latex: Annotated[bool, typer.Option("--latex", help="LaTeX (booktabs) instead of the terminal tables.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the Markdown/LaTeX to this file.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write the PNG figures into this folder.")] = None,
    ranking: Annotated[
        RankingChoice, typer.Option(help="Ranking of the tables: full, sampled or both.")
    ] = RankingChoice.both,
    bootstrap_seed: Annotated[int, typer.Option(help="Seed of the block-bootstrap intervals.")] = 0,
) -> None:
    """Tables (accuracy, ablation, time per batch, paired tests, protocol agreement) and figures from stored runs."""
    from melonbench.report.build import ReportOptions, make_report

    if markdown and latex:
        raise MelonbenchError("choose one of --markdown and --latex")
    options = ReportOptions(
        results=results_dir,
        datasets=tuple(dataset or ()),
        ranking=ranking.value,
        format="markdown" if markdown else "latex" if latex else "terminal",
        out=out,
        plots=plots,
        bootstrap_seed=bootstrap_seed,
    )
    make_report(options, _out())


def _parse_names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


@app.command()
def reproduce(
    dataset: Dataset = "synthetic",
    models: Annotated[str, typer.Option(help="Comma-separated recommenders.")] = "bpr,ncf",
    strategies: Annotated[
        str, typer.Option(help="'all' (every registered strategy) or a comma-separated list.")
    ] = "all",
    seeds: Annotated[int, typer.Option(help="Run seeds 0..N-1.")] = 5,
    references: Annotated[
        str, typer.Option(help="Reference recommenders without learning, comma-separated, or 'none'.")
    ] = "pop,recent-pop",
    protocol: Annotated[
        ProtocolChoice, typer.Option(help="leakfree (default) or paper (the published setting).")
    ] = ProtocolChoice.leakfree,
    ranking: Annotated[
        RankingChoice, typer.Option(help="Ranking of the report's tables: full, sampled or both.")
    ] = RankingChoice.both,
    device: Device = DeviceChoice.auto,
    capture_lr: Annotated[
        int, typer.Option(help="Store the learning-rate matrix of every N-th batch (0: off; Figure 4 needs it).")
    ] = 0,
    results: Annotated[Path | None, typer.Option(help="Result store (default $MELONBENCH_HOME/results).")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default $MELONBENCH_HOME/reports/<dataset>).")
    ] = None,
    epochs: Epochs = 100,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Strategy setting: key=value (every strategy of the grid that has key) or strategy:key=value.",
        ),
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option(help="Run only the grid's failed runs again (the others are not touched).")
    ] = False,
    tuned: Annotated[
        bool,
        typer.Option(
            "--tuned",
            help="Run every strategy with the settings `melonbench tune` chose (refused where none is stored); the "
            "report puts them beside the published settings' runs where the store has those.",
        ),
    ] = False,
    engine: EngineOption = EngineChoice.local,
    jobs: JobsOption = None,
    address: AddressOption = None,
) -> None:
    """Run the paper's grid (models × strategies × seeds; finished runs are kept, interrupted ones resume, failed
    ones are recorded and the grid goes on), then write the report (Markdown, LaTeX, figures) and a summary.
    Exits with code 1 when a run of the grid failed."""
    from melonbench.pipeline.progress import grid_hooks
    from melonbench.pipeline.reproduce import ReproduceConfig
    from melonbench.pipeline.reproduce import reproduce as run_grid

    base = RunConfig(
        dataset=dataset,
        device=device.value,
        protocol=protocol.value,
        capture_lr_every=capture_lr,
        pretrain=PretrainConfig(epochs=epochs),
    )
    config = ReproduceConfig(
        base=base,
        models=_parse_names(models),
        strategies=None if strategies.strip() == "all" else _parse_names(strategies),
        references=() if references.strip() == "none" else _parse_names(references),
        seeds=seeds,
        ranking=ranking.value,
        results=results,
        out=out,
        settings=_parse_params(set_),
        retry_failed=retry_failed,
        tuned=tuned,
        engine=_engine(engine.value, jobs, address),
    )
    with grid_hooks(console) as hooks:
        result = run_grid(config, hooks=hooks, console=console)
    if result.failures:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: known errors become one red line and exit code 2.

    Set ``MELONBENCH_DEBUG=1`` to get the full traceback instead. Usage errors are Typer's own (exit code 2).
    """
    try:
        app()
    except MelonbenchError as exc:
        if os.environ.get("MELONBENCH_DEBUG"):
            raise
        # escaped: a message's brackets are text (pip install 'melonbench[ray]'), not rich markup
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
