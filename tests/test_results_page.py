"""benchmarks/results_page.py: the page's generated sections are replaced and the hand-written text kept; one small
grid goes from tuning to the page through the real CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import results_page  # noqa: E402


def test_a_section_is_replaced_between_its_markers_and_the_rest_kept():
    page = "# Results\n\nverdict A\n\n<!-- generated: g -->\nold table\n<!-- end: g -->\n\nverdict B\n"
    out = results_page.replace_section(page, "g", "new table\n")
    assert out == "# Results\n\nverdict A\n\n<!-- generated: g -->\nnew table\n<!-- end: g -->\n\nverdict B\n"
    # another dataset's section is appended, and replacing one leaves the other alone
    two = results_page.replace_section(out, "m", "m table")
    assert two.endswith("verdict B\n\n<!-- generated: m -->\nm table\n<!-- end: m -->\n")
    assert results_page.replace_section(two, "g", "g2").count("g2") == 1
    assert "m table" in results_page.replace_section(two, "g", "g2")


def test_report_headings_sit_two_levels_down():
    assert results_page._demote_headings("# A\n## B\ntext # not a heading\n") == "### A\n#### B\ntext # not a heading\n"


def test_unknown_stage_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        results_page.main(["--home", str(tmp_path), "--stages", "publish"])
    assert "unknown stage(s) ['publish']" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_then_tuned_grid_then_page(melonbench_home, tmp_path):
    from melonbench.core.config import PrepareOptions
    from melonbench.data.prepare import prepare_dataset

    prepare_dataset(
        "synthetic", PrepareOptions(core=5, split=(70.0, 10.0, 20.0), params=(("users", "400"), ("items", "300")))
    )
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nOur verdict, by hand.\n")
    code = results_page.main(
        ["--home", str(melonbench_home), "--datasets", "synthetic", "--models", "bpr", "--strategies", "default"]
        + ["--seeds", "1", "--budget", "2", "--tune-seeds", "1", "--stages", "tune,tuned,page", "--page", str(page)]
        + ["--pretrain", "--epochs 1", "--extra", "--references pop --ranking full"]
    )
    assert code == 0
    text = page.read_text()
    assert text.startswith("# Results\n\nOur verdict, by hand.\n\n<!-- generated: synthetic -->\n")
    section = text.split("<!-- generated: synthetic -->")[1]
    assert "tuned" in section.lower() and "pop" in section
    assert (melonbench_home / "results" / "tuning").is_dir()


def _manifest(folder: Path, strategy: str, seed: int, sampled: float, full: float, *, failed=False, tuned=None) -> None:
    run = folder / f"g1_bpr_{strategy}_seed{seed}_leakfree_test_{seed:08d}{0 if tuned is None else 1:02d}"
    run.mkdir(parents=True)
    config = {"model": "bpr", "strategy": strategy, "protocol": "leakfree", "seed": seed, "tuned": tuned}
    if failed:
        (run / "failure.json").write_text(json.dumps({"config": config, "reason": "diverged"}))
    else:
        summary = {"sampled_hr@5": sampled, "full_hr@5": full}
        (run / "manifest.json").write_text(json.dumps({"config": config, "summary": summary}))


def test_seed_spread_gives_mean_and_coefficient_of_variation_and_marks_the_target(tmp_path):
    for seed, (sampled, full) in enumerate([(0.2, 0.01), (0.3, 0.03), (0.4, 0.02)]):
        _manifest(tmp_path, "melon", seed, sampled, full)
    _manifest(tmp_path, "melon", 3, 0.0, 0.0, failed=True)
    _manifest(tmp_path, "default", 0, 0.1, 0.01)
    _manifest(tmp_path, "frozen", 0, 0.05, 0.005)
    _manifest(tmp_path, "frozen", 0, 0.05, 0.005, tuned=[])  # reproduce --tuned: nothing to tune, still its own row
    rows = results_page.seed_spread(tmp_path, "g1")
    assert [(r["strategy"], r["settings"], r["sampled"], r["failed"]) for r in rows] == [
        ("default", "", [0.1], 0),
        ("frozen", "", [0.05], 0),
        ("frozen", "tuned", [0.05], 0),
        ("melon", "", [0.2, 0.3, 0.4], 1),
    ]
    # sampled: mean 0.3, sd 0.1 → CV 0.333 (above 0.25); full: mean 0.02, sd 0.01 → CV 0.5
    table = results_page.spread_table(rows)
    assert (
        "| bpr | melon | leakfree | published | 3 | 1 | 0.3000 | 0.333 **>0.25** | 0.0200 | 0.500 **>0.25** |" in table
    )
    assert "| bpr | default | leakfree | published | 1 | 0 | 0.1000 | — | 0.0100 | — |" in table
    assert results_page.cv([0.3, 0.3]) == 0.0 and results_page.cv([0.1]) is None
