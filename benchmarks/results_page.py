"""Regenerate docs/results.md: the real-data grid behind the results page (issue 17).

One command runs, in one store, everything the page reports, then rewrites the page's generated sections:

    python benchmarks/results_page.py --home ~/melonbench-results            # everything (CPU: days; see below)
    python benchmarks/results_page.py --home H --stages published,page        # the published settings only
    python benchmarks/results_page.py --home H --stages page                  # rewrite the page from the store

Stages, in order (each skips what the store already holds: ``reproduce`` keeps finished runs, ``tune`` reuses
its stored trials, so an interrupted regeneration resumes):

- ``prepare``: Amazon Grocery 2014 5-core (the three ReChorus files) and MovieLens latest-small, from
  ``../shared/data``, 20-core, the paper's 80:2:18 split;
- ``tune``: ``melonbench tune`` for every strategy of every model, the same ``--budget`` and ``--seeds`` for all
  (validation part only, full ranking);
- ``published``: ``reproduce`` with the published settings, leak-free protocol;
- ``tuned``: ``reproduce --tuned`` (the report then shows tuned and published rows side by side);
- ``paper``: ``reproduce --protocol paper`` with the published settings;
- ``page``: ``melonbench report --markdown`` per dataset, written between the page's ``<!-- generated: NAME -->``
  markers; the hand-written verdicts outside the markers are kept.

Every ``reproduce`` reports full and sampled ranking, all and warm-item interactions, seed-level intervals
(seeds, then blocks of batches) and the references ``pop`` and ``recent-pop``. A grid whose runs partly failed
exits with code 1 from ``reproduce``; this script records that and goes on, and the report shows the failed rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PAGE = ROOT / "docs" / "results.md"
STAGES = ("prepare", "tune", "published", "tuned", "paper", "page")
CV_TARGET = 0.25  # issue 16: no strategy's test HR@5 varies over seeds by more than this coefficient of variation

# name → the `melonbench prepare` arguments that make it (inputs under ../shared/data)
RECIPES: dict[str, list[str]] = {
    "grocery": [
        "csv",
        "--name",
        "grocery",
        "--columns",
        "user_id,item_id,time",
        *[
            arg
            for part in ("train", "dev", "test")
            for arg in ("--input", str(SHARED / "amazon-grocery-5core-2014-rechorus" / f"{part}.csv"))
        ],
        "--split",
        "80:2:18",
    ],
    "movielens": ["movielens", "--input", str(SHARED / "ml-latest-small" / "ratings.csv"), "--split", "80:2:18"],
}


def melonbench(args: list[str], env: dict[str, str], log: list[str]) -> int:
    """Run one CLI command, echo it, and note a non-zero exit without stopping the regeneration."""
    command = [sys.executable, "-m", "melonbench", *args]
    print("$ melonbench " + " ".join(args), flush=True)
    code = subprocess.run(command, env=env).returncode
    if code:
        log.append(f"exit {code}: melonbench {' '.join(args)}")
    return code


def strategies_for(model: str) -> list[str]:
    """Every registered strategy that supports ``model`` (the learning recommenders' grid)."""
    from melonbench.strategies import supporting  # noqa: PLC0415 (imported late: --help stays fast)

    return supporting(model)


def replace_section(page: str, name: str, body: str) -> str:
    """``page`` with the text between ``<!-- generated: name -->`` and ``<!-- end: name -->`` replaced by ``body``.

    A page without the markers gets them appended; everything outside the markers is kept as it is.
    """
    begin, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(page):
        return pattern.sub(lambda _: block, page, count=1)
    return page.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", required=True, help="MELONBENCH_HOME of the results store (made if missing)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--datasets", default="grocery,movielens")
    parser.add_argument("--models", default="bpr,ncf")
    parser.add_argument("--strategies", default="all", help="'all' (every strategy of the model) or a list")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=16, help="tune: trials per strategy (the same for all)")
    parser.add_argument("--tune-seeds", type=int, default=2)
    parser.add_argument(
        "--pretrain", default="", help="pre-training options for tune and reproduce alike, e.g. '--epochs 30'"
    )
    parser.add_argument("--extra", default="", help="more arguments for every reproduce, e.g. '--references pop'")
    parser.add_argument("--page", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    if unknown := set(stages) - set(STAGES):
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    datasets, models = args.datasets.split(","), args.models.split(",")
    home = Path(args.home).expanduser().resolve()
    env = {**os.environ, "MELONBENCH_HOME": str(home)}
    # tune's choice is stored for one pre-training: tune and reproduce must be given the same options
    pretrain, extra = args.pretrain.split(), args.extra.split()
    log: list[str] = []

    for dataset in datasets:
        if "prepare" in stages and not (home / "datasets" / dataset / "card.json").is_file():
            if dataset not in RECIPES:
                parser.error(f"no recipe for '{dataset}' (known: {', '.join(RECIPES)}); prepare it yourself")
            melonbench(["prepare", *RECIPES[dataset]], env, log)
        for model in models:
            chosen = strategies_for(model) if args.strategies == "all" else args.strategies.split(",")
            grid = ["reproduce", "-d", dataset, "--models", model, "--strategies", ",".join(chosen)]
            grid += ["--seeds", str(args.seeds), *pretrain, *extra]
            if "tune" in stages:
                for strategy in chosen:
                    melonbench(
                        ["tune", "-d", dataset, "-m", model, "-s", strategy, "--budget", str(args.budget)]
                        + ["--seeds", str(args.tune_seeds), *pretrain],
                        env,
                        log,
                    )
            out = home / "reports" / f"{dataset}_{model}"
            if "published" in stages:
                melonbench([*grid, "--out", str(out / "published")], env, log)
            if "tuned" in stages:
                melonbench([*grid, "--tuned", "--out", str(out / "tuned")], env, log)
            if "paper" in stages:
                melonbench([*grid, "--protocol", "paper", "--out", str(out / "paper")], env, log)

    if "page" in stages:
        page = args.page.read_text() if args.page.is_file() else "# Results on real data\n"
        for dataset in datasets:
            table = home / "reports" / f"{dataset}.md"
            table.parent.mkdir(parents=True, exist_ok=True)
            if melonbench(["report", "--markdown", "-d", dataset, "--out", str(table)], env, log) == 0:
                page = replace_section(page, dataset, _demote_headings(table.read_text()))
            spread = spread_table(seed_spread(home / "results", dataset))
            page = replace_section(page, f"{dataset}-seeds", f"Test HR@5 over seeds, {dataset}:\n\n{spread}")
        tmp = args.page.with_suffix(".md.tmp")
        tmp.write_text(page)
        tmp.replace(args.page)  # atomic: a failed regeneration leaves the old page
        print(f"wrote {args.page}")

    for line in log:
        print(line, file=sys.stderr)
    return 1 if log else 0


def seed_spread(results: Path, dataset: str) -> list[dict]:
    """Per (model, strategy, protocol, settings): the test HR@5 of every finished seed under both rankings.

    Read from the run manifests (``summary``), failed runs counted apart; one row per group, sorted. A run of
    ``reproduce --tuned`` is "tuned" even when its strategy has nothing to tune (its ``tuned`` is then empty).
    """
    groups: dict[tuple[str, str, str, str], dict] = {}
    for folder in sorted(results.glob(f"{dataset}_*")):
        for name, finished in (("manifest.json", True), ("failure.json", False)):
            path = folder / name
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
            config = record["config"]
            key = (
                config["model"],
                config["strategy"],
                config["protocol"],
                "tuned" if config.get("tuned") is not None else "",
            )
            group = groups.setdefault(key, {"sampled": [], "full": [], "failed": 0})
            if finished:
                group["sampled"].append(record["summary"]["sampled_hr@5"])
                group["full"].append(record["summary"]["full_hr@5"])
            else:
                group["failed"] += 1
            break
    return [
        {"model": k[0], "strategy": k[1], "protocol": k[2], "settings": k[3], **v} for k, v in sorted(groups.items())
    ]


def cv(values: list[float]) -> float | None:
    """Coefficient of variation (sample standard deviation over the mean); None below two values or a zero mean."""
    if len(values) < 2 or statistics.mean(values) == 0:
        return None
    return statistics.stdev(values) / statistics.mean(values)


def spread_table(rows: list[dict]) -> str:
    """Markdown: mean and CV of test HR@5 per group and ranking, marked where the CV exceeds :data:`CV_TARGET`."""
    lines = [
        "| model | strategy | protocol | settings | seeds | failed | sampled HR@5 | CV | full HR@5 | CV |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = []
        for ranking in ("sampled", "full"):
            values, spread = row[ranking], cv(row[ranking])
            mean = f"{statistics.mean(values):.4f}" if values else "—"
            shown = "—" if spread is None else f"{spread:.3f}" + (" **>0.25**" if spread > CV_TARGET else "")
            cells += [mean, shown]
        settings = row["settings"] or "published"
        lines.append(
            f"| {row['model']} | {row['strategy']} | {row['protocol']} | {settings} | {len(row['sampled'])} "
            f"| {row['failed']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _demote_headings(markdown: str) -> str:
    """The report's headings two levels down, so they sit under the page's dataset heading."""
    return re.sub(r"^(#+) ", lambda m: "#" * min(len(m.group(1)) + 2, 6) + " ", markdown, flags=re.MULTILINE)


if __name__ == "__main__":
    sys.exit(main())
