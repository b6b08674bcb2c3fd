"""``melonbench report`` on a fixed, hand-written result store: golden Markdown/LaTeX, statistics, refusals, plots.

The store below is written by hand (no replay), so every input is fixed. Regenerate the golden files after a
deliberate change of the output with ``python tests/test_report.py`` and review the diff.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import numpy as np
import polars as pl
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from melonbench.cli import app
from melonbench.core.errors import MelonbenchError
from melonbench.report import model as report_model
from melonbench.report.build import ReportOptions, build_report, make_report, render
from melonbench.report.model import Report, fmt_p
from melonbench.report.plots import write_plots
from melonbench.report.runs import PairingError, aligned, load_failures, load_runs

GOLDEN = Path(__file__).parent / "golden"
# Recent-pop, a reference without learning, is best under sampled ranking: the best marks must count it.
SAMPLED_BASE = {
    "default": 0.30,
    "frozen": 0.25,
    "melon": 0.45,
    "sml": 0.28,
    "melon-i": 0.31,
    "melon-p": 0.29,
    "pop": 0.20,
    "recent-pop": 0.50,
}
# Full ranking orders Frozen above Default and SML below it: the agreement table must flag that.
FULL_BASE = {
    "default": 0.10,
    "frozen": 0.12,
    "melon": 0.16,
    "sml": 0.09,
    "melon-i": 0.11,
    "melon-p": 0.10,
    "pop": 0.03,
    "recent-pop": 0.13,
}
UPDATE_S = {
    "default": 0.004,
    "frozen": 0.0005,
    "melon": 0.05,
    "sml": 0.08,
    "melon-i": 0.045,
    "melon-p": 0.046,
    "pop": 0.0001,
    "recent-pop": 0.0002,
}
REFERENCES = ("pop", "recent-pop")
# Per batch: (interactions of the group, shift of its metrics from the batch's); cold items are absent from every
# fourth batch (their metrics are then NaN, and must weigh nothing).
GROUP_SHIFT = {"warm_item": 0.02, "cold_item": -0.05, "warm_user": 0.0, "cold_user": -0.01}


def group_size(group: str, batch: int, n: int) -> int:
    cold_items, cold_users = 10 * (batch % 4), batch % 3
    return {"warm_item": n - cold_items, "cold_item": cold_items, "warm_user": n - cold_users, "cold_user": cold_users}[
        group
    ]


SALT = {name: i for i, name in enumerate(SAMPLED_BASE)}
GRID = [(m, s) for m in ("bpr", "ncf") for s in ("default", "frozen", "melon")] + [
    ("bpr", "sml"),
    ("bpr", "melon-i"),
    ("bpr", "melon-p"),
]
# Failed runs of the golden store: MeLON-I/BPR seed 1 diverged in the replay (so its cells stand on 1 of 2 seeds),
# MeLON-P/NCF seed 0 in meta pre-training (the only MeLON-P/NCF run: its cell says "failed").
FAILED = {
    ("bpr", "melon-i", 1): {"stage": "replay", "batch": 7, "reason": "the loss became non-finite at online batch 7"},
    ("ncf", "melon-p", 0): {
        "stage": "meta pre-training",
        "batch": None,
        "reason": "meta pre-training loss became nan in epoch 1, batch 12",
    },
}
SPANS = [(0, "validation", 1000, 256), (1, "validation", 1256, 100)] + [
    (2 + i, "test", 1356 + 256 * i, 256 if i < 9 else 50) for i in range(10)
]


class _Fake:
    supports = frozenset({"bpr", "ncf"})
    incompatibility = ""


def fake_registry() -> dict[str, type]:
    """A fixed registry, so the golden files do not change when real strategies are registered."""
    labels = {
        "default": "Default",
        "frozen": "Frozen",
        "melon": "MeLON",
        "sml": "SML",
        "melon-i": "MeLON-I",
        "melon-p": "MeLON-P",
    }
    out = {name: type(name, (_Fake,), {"label": label}) for name, label in labels.items()}
    out["sml"].supports = frozenset({"bpr"})
    out["sml"].incompatibility = "it transforms embeddings only"
    return out


def value(strategy: str, model: str, ranking: str, metric: str, k: int, batch: int, seed: int) -> float:
    """Base level per strategy, plus a pattern shared by every strategy (what pairing removes), plus its own."""
    base = (SAMPLED_BASE if ranking == "sampled" else FULL_BASE)[strategy]
    base *= (1.0 if metric == "hr" else 0.6) * (k / 5) ** 0.3 * (1.0 if model == "bpr" else 0.9)
    # Integer hashes (exact on every machine) stand in for noise: "common" is shared by every strategy.
    common = 0.03 * (((batch + 1) * 7919 + (seed + 1) * 104729) % 1000) / 1000
    own = 0.01 * (((batch + 1) * 15485863 + (seed + 1) * 104729 + SALT[strategy] * 1299709) % 1000) / 1000
    return round(base + common + own, 6)


def batches(model: str, strategy: str, seed: int, spans=SPANS) -> pl.DataFrame:
    """One run's rows; a reference run (``model`` pop or recent-pop, ``strategy`` count) is keyed by its model."""
    key = model if model in REFERENCES else strategy
    model = "ncf" if model in REFERENCES else model  # the references' levels: NCF's (any fixed choice would do)
    rows = []
    for batch, split, start, n in spans:
        row = {
            "batch": batch,
            "split": split,
            "start": start,
            "n": n,
            "first_ts": 10 * start,
            "last_ts": 10 * start + n,
        }
        for ranking in ("sampled", "full"):
            for metric in ("hr", "ndcg"):
                for k in (5, 10, 20):
                    row[f"{ranking}_{metric}@{k}"] = value(key, model, ranking, metric, k, batch, seed)
        row.update(
            loss=0.5,
            cold_users=batch % 3,
            eval_s=0.002 + 0.0001 * (batch % 3),
            update_s=UPDATE_S[key] * (1 + 0.1 * (batch % 4)),
            warmup=batch < 2,
        )
        metrics = [c for c in row if c.startswith(("sampled_", "full_"))]
        for group, shift in GROUP_SHIFT.items():
            size = group_size(group, batch, n)
            for col in metrics:
                row[f"{col}_{group}"] = round(row[col] + shift + 0.001 * (batch % 4), 6) if size else math.nan
        row.update({f"n_{group}": group_size(group, batch, n) for group in GROUP_SHIFT})
        row["lr_rank"] = 5 if (strategy == "melon" and batch == 11) else None
        rows.append(row)
    return pl.DataFrame(rows, schema_overrides={"lr_rank": pl.Int64})


def write_run(root: Path, model: str, strategy: str, seed: int, frame: pl.DataFrame | None = None, **changes) -> str:
    run_id = f"toy_{model}_{strategy}_seed{seed}"
    manifest = {
        "run_id": run_id,
        "config": {
            "dataset": "toy",
            "model": model,
            "strategy": strategy,
            "seed": seed,
            "protocol": "leakfree",
            "split": "test",
        },
        "strategy": {"name": strategy, "label": strategy},
        "dataset": {"name": "toy", "fingerprint": "fp-toy"},
        "checkpoint": {"key": f"ckpt-{model}-{seed}"},
        "negatives_sha256": f"neg-{seed}",
        "device": {"type": "cuda", "name": "Test GPU"},
    }
    for dotted, new in changes.items():
        *head, last = dotted.split("__")
        target = manifest
        for key in head:
            target = target[key]
        target[last] = new
    folder = root / run_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (frame if frame is not None else batches(model, strategy, seed)).write_parquet(folder / "batches.parquet")
    if strategy == "melon" and model == "bpr":
        i, j = np.meshgrid(np.arange(8), np.arange(12), indexing="ij")
        w = 0.01 * (i + 1) / 8 + 0.005 * (j % 4) + 0.002 * ((i * j) % 3)  # [8 interactions, 12 positions]
        (folder / "lr").mkdir()
        np.save(folder / "lr" / "batch_00011.npy", w.astype(np.float32))
    return run_id


def write_failure(root: Path, model: str, strategy: str, seed: int, **fields) -> str:
    """A failure record as ``RunStore.record_failure`` writes it (only the keys the report reads, plus a traceback)."""
    run_id = f"toy_{model}_{strategy}_seed{seed}"
    record = {
        "status": "failed",
        "run_id": run_id,
        "config": {
            "dataset": "toy",
            "model": model,
            "strategy": strategy,
            "seed": seed,
            "protocol": "leakfree",
            "split": "test",
        },
        "strategy": {"name": strategy, "label": strategy},
        "stage": "replay",
        "batch": None,
        "diverged": True,
        "unexpected": False,
        "error": "DivergenceError",
        "reason": "",
        "traceback": "Traceback (most recent call last): ...",
        **fields,
    }
    folder = root / run_id
    folder.mkdir(parents=True)
    (folder / "failure.json").write_text(json.dumps(record))
    return run_id


def write_store(root: Path) -> Path:
    for model, strategy in GRID:
        for seed in (0, 1):
            if (model, strategy, seed) not in FAILED:
                write_run(root, model, strategy, seed)
    for (model, strategy, seed), fields in FAILED.items():
        write_failure(root, model, strategy, seed, **fields)
    for model in REFERENCES:
        for seed in (0, 1):
            write_run(root, model, "count", seed, checkpoint={"key": f"counts-{model}"})
    return root


def full_report(root: Path, *args, **kwargs):
    """The report ``melonbench report`` builds for ``root``: its finished runs and its failed ones."""
    runs = load_runs(root)
    return build_report(runs, *args, failures=load_failures(root, runs=runs), **kwargs)


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(report_model, "STRATEGIES", fake_registry())


@pytest.fixture
def store(tmp_path, registry) -> Path:
    return write_store(tmp_path / "results")


def test_markdown_matches_the_golden_file(store):
    assert render(full_report(store), "markdown") == (GOLDEN / "report.md").read_text()


def test_latex_matches_the_golden_file(store):
    assert render(full_report(store), "latex") == (GOLDEN / "report.tex").read_text()


def test_cli_writes_the_same_files(store, tmp_path):
    runner = CliRunner()
    for flag, name in (("--markdown", "report.md"), ("--latex", "report.tex")):
        out = tmp_path / name
        result = runner.invoke(app, ["report", str(store), flag, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.read_text() == (GOLDEN / name).read_text()
    result = runner.invoke(app, ["report", str(store), "--ranking", "sampled"])
    assert result.exit_code == 0, result.output
    assert "Accuracy, sampled ranking" in result.output and "full ranking (every" not in result.output
    assert "…" not in result.output  # not a terminal: the tables keep their width (rich would squeeze them to 80)
    assert "│ toy     │ Default            │ 0.3189 ± 0.0028 │" in result.output


def test_accuracy_cell_equals_a_hand_computed_mean_and_standard_error(store):
    # Default on BPR, sampled HR@5: each seed's interaction-weighted mean over its 10 test batches, then the mean
    # and the standard error (sample sd / √2) of the two seed means, computed here from the raw formula.
    seed_means = []
    for seed in (0, 1):
        test = [
            (n, value("default", "bpr", "sampled", "hr", 5, b, seed)) for b, split, _, n in SPANS if split == "test"
        ]
        seed_means.append(sum(n * v for n, v in test) / sum(n for n, _ in test))
    mean = (seed_means[0] + seed_means[1]) / 2
    se = abs(seed_means[0] - seed_means[1]) / 2  # for two values, sd/√2 = |a − b| / 2
    table = build_report(load_runs(store), "sampled").tables[0]
    row = next(r for r in table.rows if r[1].text == "Default")
    assert row[2].text == f"{mean:.4f} ± {se:.4f}"
    melon = next(r for r in table.rows if r[1].text == "MeLON")
    recent = next(r for r in table.rows if r[1].text == "Recent-pop (W=256)")
    # Levels 0.50 (Recent-pop, NCF's level 0.45 on every column) and 0.45 (MeLON; on NCF 0.405) lead; the
    # per-strategy term adds at most 0.01, the shared one 0.03. The best marks count the reference row too.
    assert melon[2].mark == "best" and recent[2].mark == "second" and row[2].mark == ""
    assert recent[2 + 6].mark == "best" and melon[2 + 6].mark == "second"
    assert [r[1].text for r in table.rows][-2:] == ["Pop", "Recent-pop (W=256)"]  # references come last
    assert recent[2].text == recent[2 + 6].text  # one row, the same beside every model
    assert any("among every row shown: reference rows and MeLON's ablation variants included" in n for n in table.notes)
    sml = next(r for r in table.rows if r[1].text == "SML")
    assert sml[2 + 6].text == "N/A"  # SML on NCF: declared incompatible
    assert "N/A: SML is defined for BPR only (it transforms embeddings only)." in table.notes


def _seed_mean(strategy: str, seed: int, metric: str = "hr", ranking: str = "sampled") -> float:
    test = [(n, value(strategy, "bpr", ranking, metric, 5, b, seed)) for b, split, _, n in SPANS if split == "test"]
    return sum(n * v for n, v in test) / sum(n for n, _ in test)


def test_a_cell_with_fewer_seeds_says_how_many_and_a_failed_run_is_a_row(tmp_path, registry):
    # Default: seeds 0-2 finished. MeLON: 0 and 1 finished, 2 diverged at batch 5. Frozen: pre-training diverged on
    # every seed. SML: seeds 0 and 1 finished, seed 2 was never run (missing, not failed).
    root = tmp_path / "results"
    for seed in (0, 1, 2):
        write_run(root, "bpr", "default", seed)
        write_failure(root, "bpr", "frozen", seed, stage="pre-training", reason="pre-training loss became nan")
    for seed in (0, 1):
        write_run(root, "bpr", "melon", seed)
        write_run(root, "bpr", "sml", seed)
    write_failure(root, "bpr", "melon", 2, batch=5, reason="the loss became non-finite at online batch 5")
    report = full_report(root, "sampled")
    assert report.header[1] == (
        "7 runs finished, 4 failed; datasets: toy; models: BPR; seeds: 0, 1, 2 (cells marked k/n stand on fewer)."
    )
    accuracy = report.tables[0]
    failed = next(t for t in report.tables if t.key == "failures")
    rows = {r[1].text: r for r in accuracy.rows}
    # MeLON's HR@5: mean and standard error (sd/√2 = |a − b| / 2 for two values) of seeds 0 and 1 alone, by hand.
    a, b = _seed_mean("melon", 0), _seed_mean("melon", 1)
    assert rows["MeLON"][2].text == f"{(a + b) / 2:.4f} ± {abs(a - b) / 2:.4f} (2/3)"
    assert rows["SML"][2].text.endswith(" (2/3)")
    d = [_seed_mean("default", s) for s in (0, 1, 2)]
    sd = math.sqrt(sum((x - sum(d) / 3) ** 2 for x in d) / 2)
    assert rows["Default"][2].text == f"{sum(d) / 3:.4f} ± {sd / math.sqrt(3):.4f}"  # all three seeds: no count
    assert [c.text for c in rows["Frozen"][2:]] == ["failed"] * 6
    assert report_model.SEEDS_NOTE in accuracy.notes and report_model.FAILED_NOTE in accuracy.notes

    assert failed.title == "Failed runs"
    assert [tuple(c.text for c in r) for r in failed.rows] == [
        ("toy", "BPR", "MeLON", "2", "diverged at batch 5"),
        ("toy", "BPR", "Frozen", "0", "diverged in pre-training: pre-training loss became nan"),
        ("toy", "BPR", "Frozen", "1", "diverged in pre-training: pre-training loss became nan"),
        ("toy", "BPR", "Frozen", "2", "diverged in pre-training: pre-training loss became nan"),
    ]
    significance = next(t for t in report.tables if t.key == "significance-sampled")
    # each comparison pairs seeds 0 and 1 only (MeLON's and SML's seed 2 are missing), of the 3 asked
    assert {r[2].text: r[3].text for r in significance.rows} == {
        "SML vs Default": "2/3",
        "MeLON vs Default": "2/3",
        "MeLON vs SML": "2/3",
    }
    timing = next(t for t in report.tables if t.key == "timing")
    assert [c.text for c in next(r for r in timing.rows if r[1].text == "Frozen")[2:]] == ["failed"] * 3
    for fmt in ("markdown", "latex"):
        assert "(2/3)" in render(report, fmt) and "diverged at batch 5" in render(report, fmt)


def test_a_seed_that_failed_everywhere_still_counts(tmp_path, registry):
    # Pre-training diverged on seed 1, so no strategy finished it: the report still stands on 1 of 2 seeds.
    root = tmp_path / "results"
    for strategy in ("default", "melon"):
        write_run(root, "bpr", strategy, 0)
        write_failure(root, "bpr", strategy, 1, stage="pre-training", reason="pre-training loss became nan")
    report = full_report(root, "sampled")
    assert report.header[1].endswith("seeds: 0, 1 (cells marked k/n stand on fewer).")
    rows = {r[1].text: r for r in report.tables[0].rows}
    assert rows["Default"][2].text == f"{_seed_mean('default', 0):.4f} (1/2)"
    assert rows["MeLON"][2].text == f"{_seed_mean('melon', 0):.4f} (1/2)"


def test_a_failed_run_and_a_finished_one_of_the_same_cell_are_refused(tmp_path, registry):
    root = tmp_path / "results"
    write_run(root, "bpr", "melon", 0)
    (root / "toy_bpr_melon_seed0").rename(root / "toy_bpr_melon_seed0_other")
    manifest = json.loads((root / "toy_bpr_melon_seed0_other" / "manifest.json").read_text())
    (root / "toy_bpr_melon_seed0_other" / "manifest.json").write_text(
        json.dumps({**manifest, "run_id": "toy_bpr_melon_seed0_other"})
    )
    write_failure(root, "bpr", "melon", 0, batch=1)
    with pytest.raises(MelonbenchError, match="has a failed run .* and another run"):
        load_failures(root, runs=load_runs(root))


def test_warm_item_cell_is_weighted_by_its_interactions_and_skips_empty_groups(store):
    # Default on BPR, sampled HR@5 over warm-item interactions: per seed Σ n_warm · hr_warm / Σ n_warm over the test
    # batches; the cold-item column is NaN wherever a batch has no cold item, and those batches weigh nothing.
    seed_means = []
    for seed in (0, 1):
        num = den = 0.0
        for b, split, _, n in SPANS:
            if split == "test":
                warm = n - 10 * (b % 4)
                num += warm * round(value("default", "bpr", "sampled", "hr", 5, b, seed) + 0.02 + 0.001 * (b % 4), 6)
                den += warm
        seed_means.append(num / den)
    report = build_report(load_runs(store), "sampled")
    table = next(t for t in report.tables if t.key == "accuracy-sampled-warm-item")
    assert table.title.endswith("warm-item interactions") and report.tables[0].title.endswith("(headline)")
    row = next(r for r in table.rows if r[1].text == "Default")
    mean, se = (seed_means[0] + seed_means[1]) / 2, abs(seed_means[0] - seed_means[1]) / 2
    assert row[2].text == f"{mean:.4f} ± {se:.4f}"
    assert "toy: 2,184 of 2,354 test interactions are warm-item (92.8 %)." in table.notes  # 9·256 + 50, less 170
    runs = load_runs(store)
    cold = next(r for r in runs if r.strategy == "default" and r.seed == 0).mean("sampled_hr@5_cold_item")
    assert math.isfinite(cold)


def test_the_paper_protocol_table_says_what_is_and_is_not_reproduced(tmp_path, registry):
    root = tmp_path / "results"
    write_run(root, "bpr", "default", 0, config__protocol="paper", config__pretrain={"weight_decay": 0.0})
    write_run(
        root,
        "bpr",
        "melon",
        0,
        config__protocol="paper",
        config__pretrain={"weight_decay": 1e-3},
        strategy__config={"meta_epochs": 3},
    )
    report = build_report(load_runs(root))
    table = next(t for t in report.tables if t.key == "paper-protocol")
    rows = {r[0].text: [c.text for c in r[1:]] for r in table.rows}
    assert rows["Evaluation negatives exclude the user's future items (leak)"][2] == "yes"
    assert rows["Ties between equal scores"] == ["may favour the positive (leak)", "count against the positive", "no"]
    assert rows["Pre-training epoch chosen on"][2] == "no"
    assert rows["Pre-training weight decay"] == ["0.001", "0, 0.001", "in 1 of 2 runs"]
    assert rows["Meta-model pre-training epochs"] == ["100 (MeLON, Alg. 1)", "3", "no"]
    assert any("[paper protocol] rows reproduce two of the published code's four leaks" in h for h in report.header)
    assert all(r[0].text.startswith("toy [paper protocol]") or not r[0].text for r in report.tables[0].rows)
    # leak-free runs alone: no such table, no such line
    plain = build_report(load_runs(write_store(tmp_path / "plain")))
    assert all(t.key != "paper-protocol" for t in plain.tables) and not any("[paper" in h for h in plain.header)


def wls_intercept_pvalue(d: np.ndarray, w: np.ndarray) -> float:
    """Weighted least squares of d on a constant, from the normal equations (an independent route to the same test):
    β = (XᵀWX)⁻¹XᵀWd, σ² = Σ w r² / (m − 1), Var β = σ² (XᵀWX)⁻¹."""
    x = np.ones((d.size, 1))
    xtwx = x.T @ (w[:, None] * x)
    beta = np.linalg.solve(xtwx, x.T @ (w * d))
    resid = d - x @ beta
    var = float(np.sum(w * resid**2)) / (d.size - 1) * np.linalg.inv(xtwx)[0, 0]
    return float(2 * sps.t.sf(abs(beta[0]) / math.sqrt(var), d.size - 1))


def test_significance_p_values_equal_a_hand_computed_weighted_test_with_holm_by_hand(tmp_path, registry):
    root = tmp_path / "results"
    for strategy in ("default", "frozen"):
        for seed in (0, 1, 2):
            write_run(root, "bpr", strategy, seed)
    runs = load_runs(root)
    report = build_report(runs, "sampled")
    table = next(t for t in report.tables if t.key == "significance-sampled")
    assert len(table.rows) == 1
    row = table.rows[0]
    tests = [(b, n) for b, split, _, n in SPANS if split == "test"]  # nine batches of 256, then one of 50
    p, delta = {}, {}
    for metric in ("hr", "ndcg"):
        d = np.array(
            [
                value("frozen", "bpr", "sampled", metric, 5, b, s) - value("default", "bpr", "sampled", metric, 5, b, s)
                for s in (0, 1, 2)
                for b, _ in tests
            ]
        )
        n = np.array([n for _ in (0, 1, 2) for _, n in tests], dtype=float)
        p[metric] = wls_intercept_pvalue(d, n)
        delta[metric] = float(np.sum(n * d) / np.sum(n))  # three seeds of equal size: the mean of the run means
        unweighted = sps.ttest_rel(d, np.zeros_like(d)).pvalue
        assert not math.isclose(p[metric], unweighted, rel_tol=1e-3)  # the weights matter
    # Holm over the family {HR@5, NDCG@5} of this one comparison: the smaller p doubles, the larger keeps
    # max(itself, the doubled smaller one).
    small, large = sorted(p.values())
    adjusted = {m: (min(1, 2 * small) if v == small else max(min(1, 2 * small), large)) for m, v in p.items()}
    assert row[6].text == fmt_p(adjusted["hr"]) and row[10].text == fmt_p(adjusted["ndcg"])
    assert row[5].text == f"{delta['hr']:+.4f}" and row[9].text == f"{delta['ndcg']:+.4f}"
    assert row[3].text == "3" and row[4].text == str(3 * len(tests))
    # Δ is the difference of the accuracy table's cells (both are means over seeds of interaction-weighted run means)
    accuracy = report.tables[0]
    cell = {r[1].text: float(r[2].text.split(" ± ")[0]) for r in accuracy.rows}
    assert abs(delta["hr"] - (cell["Frozen"] - cell["Default"])) < 1e-4


def test_p_values_never_print_as_zero(store):
    text = render(build_report(load_runs(store), "sampled"), "markdown")
    assert "< 1e-16" in text  # MeLON vs Default: a 0.15 gap with ±0.01 noise over 20 pairs
    assert fmt_p(0.0) == "< 1e-16" and fmt_p(math.nan) == "n/a" and fmt_p(0.0123) == "0.012"
    assert "| 0.000 |" not in text and " 0e" not in text


def test_protocol_disagreement_is_warned_about(store):
    report = build_report(load_runs(store))
    # Full-ranking levels put Frozen (0.12) above Default (0.10) on both models, sampled ones below (0.25 < 0.30).
    warned = [w for w in report.warnings if "full and sampled ranking order the strategies differently" in w]
    assert [w.split(":")[0] for w in warned] == ["toy/BPR", "toy/BPR", "toy/NCF", "toy/NCF"]
    assert "full MeLON > Recent-pop (W=256) > Frozen > Default > Pop" in warned[2]
    assert "sampled Recent-pop (W=256) > MeLON > Default > Frozen > Pop" in warned[2]


def test_misaligned_batches_are_refused_with_the_missing_ones_named(tmp_path, registry):
    root = tmp_path / "results"
    write_run(root, "bpr", "default", 0)
    short = write_run(root, "bpr", "frozen", 0, batches("bpr", "frozen", 0, SPANS[:-2]))
    with pytest.raises(PairingError, match=rf"{short} lacks batches 10, 11"):
        build_report(load_runs(root))


def test_moved_batches_are_refused(tmp_path, registry):
    root = tmp_path / "results"
    a = load_runs(write_store_two(root, batches("bpr", "frozen", 0, [(b, s, st + 1, n) for b, s, st, n in SPANS])))
    with pytest.raises(PairingError, match=r"batches 2, 3, .* cover different interactions"):
        aligned(a[0], a[1], ["sampled_hr@5"])


def write_store_two(root: Path, frozen_frame: pl.DataFrame) -> Path:
    write_run(root, "bpr", "default", 0)
    write_run(root, "bpr", "frozen", 0, frozen_frame)
    return root


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"negatives_sha256": "neg-other"}, "negatives_sha256: 'neg-other' vs 'neg-0'"),
        ({"checkpoint__key": "ckpt-other"}, "checkpoint key: 'ckpt-other' vs 'ckpt-bpr-0'"),
        ({"dataset__fingerprint": "fp-other"}, "dataset fingerprint"),
    ],
)
def test_runs_from_different_negatives_or_checkpoints_are_refused(tmp_path, registry, change, named):
    root = tmp_path / "results"
    write_run(root, "bpr", "default", 0)
    write_run(root, "bpr", "frozen", 0, **change)
    with pytest.raises(PairingError, match="cannot be paired") as info:
        build_report(load_runs(root))
    assert named in str(info.value)


def test_a_manifest_without_pairing_keys_is_refused_with_them_named(tmp_path, registry):
    root = tmp_path / "results"
    write_run(root, "bpr", "default", 0, negatives_sha256=None, checkpoint={})
    with pytest.raises(MelonbenchError, match="lacks checkpoint.key, negatives_sha256"):
        load_runs(root)


def test_two_runs_of_one_cell_are_refused(tmp_path, registry):
    root = tmp_path / "results"
    write_run(root, "bpr", "default", 0)
    frame = batches("bpr", "default", 0)
    folder = root / "toy_bpr_default_seed0_again"
    folder.mkdir()
    manifest = json.loads((root / "toy_bpr_default_seed0" / "manifest.json").read_text())
    manifest["run_id"] = folder.name
    manifest["config"]["batch_size"] = 128
    (folder / "manifest.json").write_text(json.dumps(manifest))
    frame.write_parquet(folder / "batches.parquet")
    with pytest.raises(MelonbenchError, match="config differs in: batch_size"):
        load_runs(root)


def _copy_run(root: Path, source: str, name: str, **config) -> dict:
    """A second folder holding ``source``'s run under another run id, its config changed by ``config``."""
    folder = root / name
    folder.mkdir()
    manifest = json.loads((root / source / "manifest.json").read_text())
    manifest["run_id"] = name
    manifest["config"].update(config)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "batches.parquet").write_bytes((root / source / "batches.parquet").read_bytes())
    return manifest


def test_two_runs_differing_only_in_result_neutral_settings_are_one_experiment(tmp_path, registry):
    # as an older melonbench stored them: --checkpoint-every and --warmup were part of the run id
    root = tmp_path / "results"
    first = write_run(root, "bpr", "default", 0, config__checkpoint_every=50, config__warmup=3)
    _copy_run(root, first, "toy_bpr_default_seed0_zz", checkpoint_every=7, warmup=0)
    (run,) = load_runs(root)
    assert run.run_id == first  # the run id that sorts first
    _copy_run(root, first, "toy_bpr_default_seed0_zzz", checkpoint_every=7, batch_size=128)
    with pytest.raises(MelonbenchError, match=r"config differs in: batch_size\)"):
        load_runs(root)


def test_two_runs_from_other_code_versions_are_refused_naming_it(tmp_path, registry):
    root = tmp_path / "results"
    first = write_run(root, "bpr", "default", 0, versions={"melonbench": "0.1.0"})
    manifest = _copy_run(root, first, "toy_bpr_default_seed0_new")
    manifest["versions"]["melonbench"] = "0.2.0"
    (root / "toy_bpr_default_seed0_new" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MelonbenchError, match=r"config differs in: code version\)"):
        load_runs(root)


def test_timing_leaves_out_the_warm_up_of_the_run_and_of_each_resumed_process(tmp_path, registry):
    root = tmp_path / "results"
    write_run(root, "bpr", "default", 0, config__warmup=2, resumed_at=[5, 9])
    (run,) = load_runs(root)
    # flagged: batches 0 and 1 (batch < 2); after the resumes at 5 and 9: 5, 6 and 9, 10
    assert run.timed()["batch"].to_list() == [2, 3, 4, 7, 8, 11]


def test_bad_options_are_refused(store, tmp_path):
    with pytest.raises(MelonbenchError, match="--ranking must be full, sampled or both"):
        make_report(ReportOptions(results=store, ranking="paper"))
    with pytest.raises(MelonbenchError, match="--out needs --markdown or --latex"):
        make_report(ReportOptions(results=store, out=tmp_path / "x.md"))
    with pytest.raises(MelonbenchError, match="no finished runs for dataset"):
        make_report(ReportOptions(results=store, datasets=("yelp",)))
    result = CliRunner().invoke(app, ["report", str(store), "--markdown", "--latex"])
    assert "choose one of --markdown and --latex" in str(result.exception)


def test_bootstrap_intervals_are_reproducible_and_follow_the_seed(store):
    runs = load_runs(store)
    first = render(build_report(runs, "sampled", bootstrap_seed=5, n_boot=300), "markdown")
    assert render(build_report(runs, "sampled", bootstrap_seed=5, n_boot=300), "markdown") == first
    assert render(build_report(runs, "sampled", bootstrap_seed=6, n_boot=300), "markdown") != first


def test_plots_are_written_and_not_empty(store, tmp_path):
    paths = write_plots(load_runs(store), tmp_path / "figures", ("sampled",))
    names = sorted(p.name for p in paths)
    # Per-batch NDCG and quality-cost for toy × {bpr, ncf}, and one heatmap (MeLON on BPR, lowest seed).
    assert names == [
        "lr_toy_bpr_melon_seed0.png",
        "per-batch_toy_bpr_sampled.png",
        "per-batch_toy_ncf_sampled.png",
        "quality-cost_toy_bpr_sampled.png",
        "quality-cost_toy_ncf_sampled.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_the_latex_agreement_table_fits_an_article_page(store, tmp_path):
    # The strategy orders wrap (tabularx): in a plain article (345 pt of text) nothing runs past the margin.
    report = full_report(store)
    agreement = Report(header=("agreement",), tables=tuple(t for t in report.tables if t.key == "agreement"))
    (tmp_path / "table.tex").write_text(render(agreement, "latex"))
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage{tabularx}"
        "\\begin{document}\\input{table}\\end{document}\n"
    )
    # Draft mode lays the pages out (the overfull boxes) without writing a PDF, so no font is generated; TeX's own
    # caches go to the test's folder.
    env = {**os.environ, "TEXMFVAR": str(tmp_path / "texmf-var"), "TEXMFCONFIG": str(tmp_path / "texmf-config")}
    done = subprocess.run(
        ["pdflatex", "-draftmode", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert done.returncode == 0, log[-2000:]
    assert "Overfull \\hbox" not in log


def figures(monkeypatch, draw, runs, ranking="sampled") -> dict[str, object]:
    """The figures ``draw`` (a function of report.plots) makes, by file name, captured instead of saved."""
    from melonbench.report import plots

    made = {}

    def keep(fig, path):
        made[path.name] = fig
        return path

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    monkeypatch.setattr(plots, "_save", keep)
    draw(runs, Path("figures"), ranking)
    for fig in made.values():
        if not isinstance(fig.canvas, FigureCanvasAgg):
            FigureCanvasAgg(fig)
        fig.canvas.draw()  # lays the figure out as saving it would
    return made


def _overlapping(boxes) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]


def test_quality_cost_points_carry_the_tables_numbers_and_error_bars(store, monkeypatch):
    from melonbench.report.plots import quality_cost

    fig = figures(monkeypatch, quality_cost, load_runs(store))["quality-cost_toy_bpr_sampled.png"]
    (ax,) = fig.axes
    bars = {ax.texts[i].get_text(): c for i, c in enumerate(ax.containers)}  # one label per point, in order
    data, _, (xbar, ybar) = bars["Default"].lines
    # HR@5: the accuracy table's cell, i.e. the mean of the two seeds' interaction-weighted means, ± their
    # standard error (sample sd / √2 = |a − b| / 2 for two seeds).
    a, b = _seed_mean("default", 0), _seed_mean("default", 1)
    assert data.get_ydata()[0] == pytest.approx((a + b) / 2, abs=1e-12)
    (low, high) = ybar.get_segments()[0][:, 1]
    assert (high - low) / 2 == pytest.approx(abs(a - b) / 2, abs=1e-12)
    # Cost: Default's update takes 0.004 s × (1, 1.1, 1.2, 1.3) by batch % 4; the timed batches 2..11 of both seeds
    # give the multipliers 1.0 ×4, 1.1 ×4, 1.2 ×6, 1.3 ×6: median 1.2, 25th percentile 1.1, 75th 1.3.
    assert data.get_xdata()[0] == pytest.approx(0.0048, rel=1e-9)
    assert xbar.get_segments()[0][:, 0] == pytest.approx([0.0044, 0.0052], rel=1e-9)
    assert "MeLON-I (1/2)" in bars  # a label says (k/n) where its point stands on fewer seeds
    assert any("± standard error over seeds" in t.get_text() for t in fig.texts)


def test_quality_cost_labels_and_ticks_neither_overlap_nor_leave_the_axes(tmp_path, registry, monkeypatch):
    # Costs over 1.3 decades (matplotlib labels the minor ticks there: 3×10⁻³ and 4×10⁻³ overlap) and the longest
    # label on the right-most point (where a label to the right of its point crosses the edge).
    order = ("pop", "frozen", "default", "sml", "melon-i", "melon-p", "melon", "recent-pop")
    for name, seconds in zip(order, np.geomspace(0.002, 0.04, len(order))):
        monkeypatch.setitem(UPDATE_S, name, float(seconds))
    from melonbench.report.plots import quality_cost

    made = figures(monkeypatch, quality_cost, load_runs(write_store(tmp_path / "results")))
    for fig in made.values():
        (ax,) = fig.axes
        renderer = fig.canvas.get_renderer()
        ticks = [t for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True) if t.get_visible() and t.get_text()]
        inside = [t for t in ticks if ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1]]
        assert len(inside) >= 2
        assert _overlapping([t.get_window_extent(renderer) for t in inside]) == []
        labels = [t.get_window_extent(renderer) for t in ax.texts]  # one per point
        assert len(labels) >= 5 and _overlapping(labels) == []
        frame = ax.get_window_extent(renderer)
        assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in labels)


def test_per_batch_figure_shows_the_spread_over_seeds(store, monkeypatch):
    from melonbench.report.plots import ndcg_over_batches

    fig = figures(monkeypatch, ndcg_over_batches, load_runs(store))["per-batch_toy_bpr_sampled.png"]
    (ax,) = fig.axes
    # A band for every strategy with two seeds (MeLON-I has one: no band, and its legend entry says 1/2).
    assert len(ax.collections) == 7
    legend = ax.get_legend()
    assert "± standard error over seeds" in legend.get_title().get_text()
    assert "MeLON-I (1/2)" in [t.get_text() for t in legend.get_texts()]
    # Default's band at batch 3: the mean of its two seeds' NDCG@10 ± |a − b| / 2.
    a, b = (value("default", "bpr", "sampled", "ndcg", 10, 3, seed) for seed in (0, 1))
    band = ax.collections[0].get_paths()[0].vertices
    at_3 = sorted(y for x, y in band if x == 3)
    assert at_3[0] == pytest.approx((a + b) / 2 - abs(a - b) / 2, abs=1e-9)
    assert at_3[-1] == pytest.approx((a + b) / 2 + abs(a - b) / 2, abs=1e-9)


def test_seed_band_is_the_mean_and_standard_error_over_seeds_cut_to_the_shortest_run():
    from melonbench.report.plots import seed_band

    frames = [
        pl.DataFrame({"batch": [1, 0, 2], "m": [0.5, 0.1, 0.9]}),  # stored out of order: sorted by batch
        pl.DataFrame({"batch": [0, 1], "m": [0.2, 0.5]}),  # the shortest run: two batches
        pl.DataFrame({"batch": [0, 1, 2], "m": [0.6, 0.5, 0.7]}),
    ]
    batch, mean, se = seed_band(frames, "m")
    assert batch.tolist() == [0, 1]
    # batch 0: 0.1, 0.2, 0.6 → mean 0.3, sample variance (0.04 + 0.01 + 0.09) / 2 = 0.07, s.e. √(0.07 / 3)
    assert mean.tolist() == pytest.approx([0.3, 0.5], abs=1e-12)
    assert se.tolist() == pytest.approx([math.sqrt(0.07 / 3), 0.0], abs=1e-12)
    assert np.isnan(seed_band(frames[:1], "m")[2]).all()  # one seed: no spread to show


def _regenerate() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(report_model, "STRATEGIES", fake_registry()):
        report = full_report(write_store(Path(tmp) / "results"))
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / "report.md").write_text(render(report, "markdown"))
        (GOLDEN / "report.tex").write_text(render(report, "latex"))


if __name__ == "__main__":
    _regenerate()
