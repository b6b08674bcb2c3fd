"""The report's figures as PNG files: accuracy over the stream, MeLON's learning-rate matrices, quality vs cost.

Figures are built with matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``, so no global
backend or figure state is touched; each PNG is written atomically.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from melonbench.report.model import RANKINGS, model_label
from melonbench.report.runs import Run
from melonbench.report.tables import group, labels_of, models_of, settings_of, strategy_order
from melonbench.store.atomic import atomic_write_bytes


def write_plots(runs: list[Run], folder: Path, rankings: tuple[str, ...]) -> list[Path]:
    """Write every figure into ``folder`` and return their paths (in a stable order).

    Parameters
    ----------
    runs : list[Run]
        Loaded runs.
    folder : Path
        Output folder (created).
    rankings : tuple[str, ...]
        ``sampled`` and/or ``full``: the protocols the per-batch and scatter figures show.
    """
    paths = []
    for ranking in rankings:
        paths += ndcg_over_batches(runs, folder, ranking)
        paths += quality_cost(runs, folder, ranking)
    paths += lr_heatmaps(runs, folder)
    return paths


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", p).strip("-") for p in parts)


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def ndcg_over_batches(runs: list[Run], folder: Path, ranking: str, metric: str = "ndcg@10") -> list[Path]:
    """Figure 5: NDCG@10 of every online batch (mean over seeds), one line per strategy, per setting × model."""
    from matplotlib.figure import Figure

    cells, labels, paths = group(runs), labels_of(runs), []
    for setting in settings_of(runs):
        for model in models_of(runs):
            names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
            if not names:
                continue
            fig = Figure(figsize=(8, 4))
            ax = fig.add_subplot()
            for name in names:
                frames = [r.batches.sort("batch") for r in cells[(setting, model, name)]]
                length = min(len(f) for f in frames)
                y = np.mean([f[f"{ranking}_{metric}"].to_numpy()[:length] for f in frames], axis=0)
                ax.plot(frames[0]["batch"].to_numpy()[:length], y, label=labels[name], linewidth=1.2)
            splits = frames[0].select("batch", "split")
            tests = splits.filter(splits["split"] == "test")["batch"]
            if 0 < len(tests) < len(splits):  # validation batches were replayed first: mark where test begins
                ax.axvline(int(tests.min()) - 0.5, color="grey", linestyle="--", linewidth=0.8, label="test begins")
            ax.set(
                xlabel="online batch",
                ylabel=f"{metric.upper()} ({ranking})",
                title=f"{setting}, {model_label(model)}: {metric.upper()} per batch, {RANKINGS[ranking]}",
            )
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            paths.append(_save(fig, folder / f"{_slug('per-batch', setting, model, ranking)}.png"))
    return paths


def quality_cost(runs: list[Run], folder: Path, ranking: str) -> list[Path]:
    """HR@5 (mean over seeds) against median update seconds per batch, one point per strategy."""
    from matplotlib.figure import Figure

    cells, labels, paths = group(runs), labels_of(runs), []
    for setting in settings_of(runs):
        for model in models_of(runs):
            names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
            if not names:
                continue
            fig = Figure(figsize=(5.5, 4))
            ax = fig.add_subplot()
            for name in names:
                cell = cells[(setting, model, name)]
                cost = float(np.median(np.concatenate([r.timed()["update_s"].to_numpy() for r in cell])))
                quality = float(np.mean([r.mean(f"{ranking}_hr@5") for r in cell]))
                ax.scatter([max(cost, 1e-6)], [quality], s=30)
                ax.annotate(
                    labels[name], (max(cost, 1e-6), quality), textcoords="offset points", xytext=(4, 4), fontsize=8
                )
            ax.set_xscale("log")
            ax.set(
                xlabel="median update seconds per batch (log)",
                ylabel=f"HR@5 ({ranking})",
                title=f"{setting}, {model_label(model)}: quality vs cost",
            )
            ax.grid(alpha=0.3)
            paths.append(_save(fig, folder / f"{_slug('quality-cost', setting, model, ranking)}.png"))
    return paths


def lr_heatmaps(runs: list[Run], folder: Path) -> list[Path]:
    """Figure 4: the last captured learning-rate matrix W (interactions × parameter positions) of the lowest seed
    of every (setting, model, strategy) that captured any, with its column means above and row means beside it."""
    from matplotlib.figure import Figure

    labels, paths, done = labels_of(runs), [], set()
    for run in sorted(runs, key=lambda r: (r.setting, r.model, r.strategy, r.seed)):
        key = (run.setting, run.model, run.strategy)
        files = sorted((run.folder / "lr").glob("batch_*.npy"))
        if key in done or not files:
            continue
        done.add(key)
        w = np.load(files[-1])  # [B, P]
        index = int(files[-1].stem.split("_")[1])
        rank = _rank(run, index)
        fig = Figure(figsize=(7, 5.5))
        grid = fig.add_gridspec(2, 3, width_ratios=(8, 1.2, 0.3), height_ratios=(1.2, 6), wspace=0.05, hspace=0.05)
        ax = fig.add_subplot(grid[1, 0])
        top = fig.add_subplot(grid[0, 0], sharex=ax)
        side = fig.add_subplot(grid[1, 1], sharey=ax)
        image = ax.imshow(w, aspect="auto", cmap="viridis", interpolation="nearest")
        top.plot(np.arange(w.shape[1]), w.mean(axis=0), linewidth=0.8)
        side.plot(w.mean(axis=1), np.arange(w.shape[0]), linewidth=0.8)
        top.tick_params(labelbottom=False)
        side.tick_params(labelleft=False)
        top.set_ylabel("column\nmean", fontsize=8)
        side.set_xlabel("row mean", fontsize=8)
        ax.set(xlabel="parameter position (slot × coordinate)", ylabel="interaction in batch")
        fig.colorbar(image, cax=fig.add_subplot(grid[1, 2]), label="learning rate")
        rank_text = f", numerical rank {rank}" if rank is not None else ""
        top.set_title(
            f"{labels[run.strategy]} learning rates, {run.setting} {model_label(run.model)}, seed "
            f"{run.seed}, batch {index}{rank_text}",
            fontsize=9,
        )
        paths.append(_save(fig, folder / f"{_slug('lr', run.setting, run.model, run.strategy)}_seed{run.seed}.png"))
    return paths


def _rank(run: Run, index: int) -> int | None:
    if "lr_rank" not in run.batches.columns:
        return None
    hit = run.batches.filter(run.batches["batch"] == index)["lr_rank"]
    return None if len(hit) == 0 or hit[0] is None else int(hit[0])
