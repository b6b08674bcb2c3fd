"""The report's figures as PNG files: accuracy over the stream, MeLON's learning-rate matrices, quality vs cost.

Figures are built with matplotlib's object API (``Figure`` + the Agg canvas), never ``pyplot``, so no global
backend or figure state is touched; each PNG is written atomically.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import numpy as np

from melonbench.report.cells import group, labels_of, models_of, seed_stat, settings_of
from melonbench.report.model import RANKINGS, fmt_seeds, model_label, strategy_order
from melonbench.report.runs import Run
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


def _figure(size: tuple[float, float]):
    """A figure on its own Agg canvas (no pyplot), so text can be measured while it is laid out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _cells(runs: list[Run]):
    """Every (setting, model) with its strategies in table order, and the runs of each."""
    cells = group(runs)
    for setting in settings_of(runs):
        for model in models_of(runs):
            names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
            if names:
                yield setting, model, names, cells


def seed_band(frames: list, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per online batch, over the seeds' runs: ``(batch, mean, standard error)``, cut to the shortest run.

    The standard error is the sample standard deviation over seeds / √seeds, as in the tables (NaN for one seed).
    """
    length = min(len(f) for f in frames)
    values = np.stack([f.sort("batch")[column].to_numpy()[:length] for f in frames])  # [seeds, batches]
    mean = values.mean(axis=0)
    se = values.std(axis=0, ddof=1) / np.sqrt(len(frames)) if len(frames) > 1 else np.full(length, np.nan)
    return frames[0].sort("batch")["batch"].to_numpy()[:length], mean, se


def ndcg_over_batches(runs: list[Run], folder: Path, ranking: str, metric: str = "ndcg@10") -> list[Path]:
    """Figure 5: NDCG@10 of every online batch (mean over seeds, a ± standard-error band), one line per strategy,
    one figure per setting × model."""
    return [
        _save(
            per_batch_figure(runs, setting, model, ranking, metric),
            folder / f"{_slug('per-batch', setting, model, ranking)}.png",
        )
        for setting, model, _, _ in _cells(runs)
    ]


def per_batch_figure(runs: list[Run], setting: str, model: str, ranking: str, metric: str = "ndcg@10"):
    """The per-batch figure of one setting × model (see :func:`ndcg_over_batches`)."""
    cells, labels = group(runs), labels_of(runs)
    names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
    fig = _figure((9, 4))
    ax = fig.add_subplot()
    seeds = max(len(cells[(setting, model, name)]) for name in names)
    for name in names:
        frames = [r.batches for r in cells[(setting, model, name)]]
        x, mean, se = seed_band(frames, f"{ranking}_{metric}")
        (line,) = ax.plot(x, mean, label=labels[name] + fmt_seeds(len(frames), seeds), linewidth=1.2)
        if len(frames) > 1:
            ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=0.2, linewidth=0)
    splits = frames[0].sort("batch").select("batch", "split")
    tests = splits.filter(splits["split"] == "test")["batch"]
    if 0 < len(tests) < len(splits):  # validation batches were replayed first: mark where test begins
        ax.axvline(int(tests.min()) - 0.5, color="grey", linestyle="--", linewidth=0.8, label="test begins")
    ax.set(
        xlabel="online batch",
        ylabel=f"{metric.upper()} ({ranking})",
        title=f"{setting}, {model_label(model)}: {metric.upper()} per batch, {RANKINGS[ranking]}",
    )
    ax.legend(
        title=f"mean over {seeds} seeds (k/n: over k)\nband: ± standard error over seeds" if seeds > 1 else "one seed",
        fontsize=8,
        title_fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),  # beside the axes: a legend inside would hide lines
        borderaxespad=0.0,
    )
    ax.grid(alpha=0.3)
    return fig


@dataclasses.dataclass(frozen=True)
class CostPoint:
    """One strategy in the quality-vs-cost figure: the accuracy table's cell against the timing table's median."""

    cost: float  # median update seconds per batch over every seed's timed batches (warm-up excluded)
    cost_low: float  # their 25th percentile
    cost_high: float  # their 75th percentile
    quality: float  # HR@5: mean over seeds of each run's interaction-weighted mean
    quality_se: float  # its standard error over seeds (NaN for one seed)


def cost_point(cell: list[Run], ranking: str) -> CostPoint:
    """The point of one strategy's runs (one per seed), with the numbers of Tables 2 and 4."""
    update = np.concatenate([r.timed()["update_s"].to_numpy() for r in cell])
    low, median, high = (float(v) for v in np.percentile(update, (25, 50, 75)))
    quality, se = seed_stat(cell, f"{ranking}_hr@5")
    return CostPoint(median, low, high, quality, se)


def quality_cost(runs: list[Run], folder: Path, ranking: str) -> list[Path]:
    """HR@5 against median update seconds per batch, one point per strategy, per setting × model."""
    return [
        _save(
            quality_cost_figure(runs, setting, model, ranking),
            folder / f"{_slug('quality-cost', setting, model, ranking)}.png",
        )
        for setting, model, _, _ in _cells(runs)
    ]


FLOOR_S = 1e-6  # a reference's update can time at 0 s: drawn at this floor, on a log axis


def quality_cost_figure(runs: list[Run], setting: str, model: str, ranking: str):
    """The quality-vs-cost figure of one setting × model: error bars ± the standard error of HR@5 over seeds and
    the interquartile range of the update seconds; each point labelled, no label over another or out of the axes."""
    cells, labels = group(runs), labels_of(runs)
    names = strategy_order({s for (st, mo, s) in cells if st == setting and mo == model})
    fig = _figure((6.5, 4.5))
    ax = fig.add_subplot()
    points = {name: cost_point(cells[(setting, model, name)], ranking) for name in names}
    seeds = max(len(cells[(setting, model, name)]) for name in names)
    low = min(max(p.cost_low, FLOOR_S) for p in points.values())
    high = max(max(p.cost_high, FLOOR_S) for p in points.values())
    ax.set_xscale("log")
    ax.set_xlim(low / 10 ** (0.08 * _decades(low, high)), high * 10 ** (0.08 * _decades(low, high)))
    _log_ticks(ax, *ax.get_xlim())
    annotations = []
    for i, name in enumerate(names):
        p = points[name]
        x = max(p.cost, FLOOR_S)
        xerr = [[x - max(p.cost_low, FLOOR_S)], [max(p.cost_high, FLOOR_S) - x]]
        yerr = None if np.isnan(p.quality_se) else [[p.quality_se], [p.quality_se]]
        color = f"C{i % 10}"
        marker = "os^Dv"[i // 10 % 5]  # past ten strategies the colours repeat, the markers differ
        ax.errorbar([x], [p.quality], xerr=xerr, yerr=yerr, fmt=marker, color=color, ms=5, capsize=2, lw=0.8)
        label = labels[name] + fmt_seeds(len(cells[(setting, model, name)]), seeds)
        annotations.append(ax.annotate(label, (x, p.quality), xytext=(5, 3), textcoords="offset points", fontsize=8))
    ax.set(
        xlabel="median update seconds per batch (log scale)",
        ylabel=f"HR@5 ({ranking})",
        title=f"{setting}, {model_label(model)}: quality vs cost, {RANKINGS[ranking]}",
    )
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.margins(y=0.12)
    _place_labels(fig, ax, annotations)
    fig.text(
        0.01,
        -0.02,
        f"Points: HR@5, mean over {seeds} seeds (k/n: over k) of each run's interaction-weighted mean, bars ± "
        "standard error over seeds;\nmedian update seconds per batch over every seed's batches (warm-up "
        "excluded), bars from the 25th to the 75th percentile.",
        fontsize=7,
        va="top",
    )
    return fig


def _decades(low: float, high: float) -> float:
    return max(np.log10(high / low), 0.1)


def _log_ticks(ax, low: float, high: float, most: int = 6) -> None:
    """Labelled ticks on a log axis at round values (1, 2, 5 × 10^k, or whole decades over a wide range), at most
    ``most`` of them, and no labels on the minor ticks: matplotlib labels those over a narrow range, where they
    overlap."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for mantissas in ((1, 1.5, 2, 3, 5, 7), (1, 2, 5), (1, 3), (1,)):
        ticks = [
            m * 10.0**k
            for k in range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
            for m in mantissas
            if low <= m * 10.0**k <= high
        ]
        if len(ticks) <= most:
            break
    while len(ticks) > most:  # many decades: every other one
        ticks = ticks[::2]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _place_labels(fig, ax, annotations: list) -> None:
    """Put each point's label beside it, inside the axes and clear of the labels placed before it.

    A label goes to the right of its point, or to the left in the right third of the axes (it would cross the
    edge); when it overlaps a label already placed or leaves the axes, it is tried above and below, further each
    time.
    """
    fig.canvas.draw()  # settles the axes' limits and layout, which the labels are measured against
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed = []
    for ann in annotations:
        x_px = ax.transData.transform(ann.xy)[0]
        left = x_px > frame.x0 + 2 / 3 * frame.width
        ann.set_horizontalalignment("right" if left else "left")
        dx = -5 if left else 5
        for dy in (3, -11, 12, -20, 21, -29, 30, -38, 39, -47):
            ann.xyann = (dx, dy)
            box = ann.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                break
        placed.append(ann.get_window_extent(renderer))


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
