"""What ``run`` and ``tune`` print when they finish: the runs' summary, the tuning trials and the search spaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from melonbench.strategies import STRATEGIES
from melonbench.strategies.space import describe, space_rows

if TYPE_CHECKING:
    from rich.console import Console

    from melonbench.core.config import RunConfig
    from melonbench.pipeline.tune import TuneResult


def print_runs(outcomes: list, out: Console, log: Console) -> None:
    """The runs' summary table on ``out`` (stdout), then where each run's results are on ``log`` (stderr)."""
    table = Table(title="online replay: mean over the reported split (sampled = 1 + 99, full = all items)")
    for col in (
        "strategy / model / seed",
        "HR@5 sampled",
        "NDCG@10 sampled",
        "HR@5 full",
        "NDCG@10 full",
        "update s",
        "eval s",
        "status",
    ):
        table.add_column(col, justify="left" if col.startswith("s") else "right")
    for outcome in outcomes:
        s = outcome.manifest.get("summary", {})
        config = outcome.manifest.get("config", {})

        def f(key: str, fmt: str = ".4f", s: dict = s) -> str:
            return format(s[key], fmt) if key in s else "-"

        table.add_row(
            f"{config.get('strategy')} / {config.get('model')} / {config.get('seed')}",
            f("sampled_hr@5"),
            f("sampled_ndcg@10"),
            f("full_hr@5"),
            f("full_ndcg@10"),
            f("median_update_s", ".5f"),
            f("median_eval_s", ".5f"),
            outcome.status,
        )
    out.print(table)
    for outcome in outcomes:
        log.print(f"results: {outcome.path}", highlight=False, soft_wrap=True)


def print_spaces(out: Console) -> None:
    """Every strategy's search space of ``melonbench tune``, one row per setting."""
    table = Table(title="search spaces of `melonbench tune` (log: ties measured in decades from the default)")
    for col in ("strategy", "setting", "grid", "default", "points"):
        table.add_column(col)
    for row in space_rows(STRATEGIES):
        table.add_row(*row)
    out.print(table)


def print_tuning(result: TuneResult, base: RunConfig, out: Console, log: Console) -> None:
    """Every trial of a tuning with its validation HR@5 on ``out``, then the choice and its notes on ``log``."""
    if result.record is None:
        log.print(f"{base.strategy} has no online settings to tune: `run --tuned` runs it as it is", highlight=False)
        return
    record = result.record
    chosen = record["chosen"]
    table = Table(title=f"validation HR@5 ({record['options']['ranking']} ranking), mean over seeds")
    for col in ("settings", "per seed", "mean", "change from default", "chosen"):
        table.add_column(col, justify="left" if col in ("settings", "per seed") else "right")
    for i, trial in enumerate(record["trials"]):
        per_seed = ", ".join(score_text(s) for s in trial["scores"])
        mean = score_text(trial["score"])
        table.add_row(
            describe(trial["settings"]), per_seed, mean, f"{trial['distance']:.2f}", "*" if i == chosen["trial"] else ""
        )
    out.print(table)
    log.print(
        f"{result.status}: {describe(chosen['settings'])} (validation HR@5 {chosen['score']:.4f}; default settings "
        f"{score_text(chosen['default_score'])}); stored in {result.path}. `melonbench run ... --tuned` uses it.",
        highlight=False,
        soft_wrap=True,
    )
    for name in chosen.get("at_edge", []):
        log.print(
            f"note: {name}={chosen['settings'][name]} is at the edge of its grid; the best value may lie beyond it",
            highlight=False,
        )


def score_text(value: float | None) -> str:
    """A trial's score, or "diverged" where its runs did not finish."""
    return "diverged" if value is None else f"{value:.4f}"
