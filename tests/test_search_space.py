"""Search spaces (`strategies.space`): every strategy declares one, trials under a budget, ties, the docs table."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest

from melonbench.core.errors import MelonbenchError
from melonbench.pipeline.tune import Trial, select
from melonbench.strategies import STRATEGIES
from melonbench.strategies.space import (
    Axis,
    at_edge,
    default_point,
    distance,
    grid,
    settings,
    space_of,
    spaces_markdown,
    trials,
)

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_registered_strategy_declares_a_search_space_over_its_config(name):
    cls = STRATEGIES[name]
    assert getattr(cls, "space", None) is not None, f"{name} declares no `space`"
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    hints = typing.get_type_hints(cls.Config)
    searched = [axis.name for axis in cls.space]
    assert len(searched) == len(set(searched))
    for axis, default in zip(cls.space, default_point(cls), strict=True):
        assert axis.name in fields
        assert hints[axis.name] in (float, int)
        assert list(axis.values) == sorted(set(axis.values)), "a grid is increasing, without repeats"
        assert default in axis.values, f"{name}.{axis.name}: the default {default} is not on the grid"
        if axis.log:
            assert min(axis.values) > 0
    # every learning rate a strategy has is searched: the recommender's online rate and each meta-model's
    rates = {f for f in fields if f == "lr" or f.endswith("_lr")}
    assert rates <= set(searched), f"{name} does not search {sorted(rates - set(searched))}"
    if not cls.space:
        assert not fields, f"{name} has settings but declares nothing to tune"


def test_the_spaces_the_issue_names():
    assert [a.name for a in STRATEGIES["default"].space] == ["lr"]
    assert STRATEGIES["default"].space[0].values == (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
    assert {a.name for a in STRATEGIES["eals"].space} == {"lr", "w_new"}
    assert {a.name for a in STRATEGIES["mwnet"].space} == {"lr", "meta_lr"}
    for name in ("melon", "melon-i", "melon-p", "metasgd", "s2meta"):
        assert [a.name for a in STRATEGIES[name].space] == ["meta_lr"]
    assert STRATEGIES["frozen"].space == ()
    assert trials(STRATEGIES["frozen"], 16) == []


def test_a_strategy_without_a_space_gets_a_clear_error():
    class Bare:
        name = "bare"

    with pytest.raises(MelonbenchError, match="strategy 'bare' declares no search space"):
        space_of(Bare)


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    lr: float = 1e-2
    w: float = 2.0
    steps: int = 4


class Toy:
    name = "toy"
    Config = ToyConfig
    space = (Axis("lr", (1e-3, 1e-2, 1e-1)), Axis("w", (1.0, 2.0, 4.0)))


def test_the_whole_grid_when_it_fits_default_first_then_grid_order():
    assert grid(Toy)[:4] == [(1e-3, 1.0), (1e-3, 2.0), (1e-3, 4.0), (1e-2, 1.0)]
    assert len(grid(Toy)) == 9
    got = trials(Toy, 9)
    assert got[0] == (1e-2, 2.0)
    assert got[1:] == [p for p in grid(Toy) if p != (1e-2, 2.0)]
    assert trials(Toy, 100) == got


def test_a_budget_keeps_the_default_and_a_seeded_nested_sample():
    small, large = trials(Toy, 4), trials(Toy, 6)
    assert len(small) == 4 and len(large) == 6
    assert small[0] == large[0] == (1e-2, 2.0)
    assert small == trials(Toy, 4), "deterministic"
    assert set(small) <= set(large), "a larger budget keeps every trial of a smaller one"
    rest = [p for p in grid(Toy) if p in set(small[1:])]
    assert small[1:] == rest, "after the default, trials keep grid order"
    assert trials(Toy, 1) == [(1e-2, 2.0)]

    class Other(Toy):
        name = "other"

    assert trials(Other, 4) != small, "the draw is seeded by the strategy's name"
    with pytest.raises(MelonbenchError, match="--budget must be at least 1"):
        trials(Toy, 0)


def test_a_default_off_the_grid_is_tried_as_well():
    class OffGrid(Toy):
        space = (Axis("lr", (1e-3, 1e-1)),)

    assert trials(OffGrid, 10) == [(1e-2,), (1e-3,), (1e-1,)]


def test_a_choice_at_the_end_of_a_grid_is_flagged():
    assert at_edge(Toy, (1e-2, 2.0)) == []
    assert at_edge(Toy, (1e-1, 1.0)) == ["lr", "w"]
    assert at_edge(Toy, (1e-3, 2.0)) == ["lr"]

    class One(Toy):
        space = (Axis("lr", (1e-2,)),)

    assert at_edge(One, (1e-2,)) == []  # a one-value grid has no beyond


def test_settings_are_written_in_their_fields_type():
    class WithInt(Toy):
        space = (Axis("steps", (1, 4, 16)), Axis("lr", (1e-3, 1e-2)))

    assert settings(WithInt, (16.0, 1e-3)) == (("steps", "16"), ("lr", "0.001"))
    assert settings(STRATEGIES["eals"], (1e-2, 8.0)) == (("lr", "0.01"), ("w_new", "8.0"))


def test_distance_is_the_change_in_decades_summed_over_axes():
    assert distance(Toy, (1e-2, 2.0)) == 0.0
    assert distance(Toy, (1e-1, 2.0)) == pytest.approx(1.0)
    assert distance(Toy, (1e-3, 4.0)) == pytest.approx(1.0 + math.log10(2.0))
    eals = STRATEGIES["eals"]  # default lr 1e-3, w_new 4
    assert distance(eals, (1e-2, 8.0)) == pytest.approx(1.30103, abs=1e-5)

    class Linear(Toy):
        space = (Axis("w", (0.0, 2.0, 10.0), log=False),)

    assert distance(Linear, (10.0,)) == pytest.approx(0.8)  # |10 − 2| / (10 − 0)


def _trial(point, score, dist):
    return Trial(point, (), dist, (score,))


def test_the_best_score_wins_and_ties_go_to_the_smaller_change():
    scored = [
        _trial((1e-2,), 0.10, 0.0),  # the default
        _trial((1e-1,), 0.20, 1.0),
        _trial((1e-4,), 0.20, 2.0),
        _trial((1e-3,), 0.20, 1.0),
    ]
    assert select(scored, tolerance=1e-9) == 3  # 1e-1 and 1e-3 tie at distance 1: the lower values win
    scored[2] = _trial((1e-4,), 0.2005, 2.0)
    assert select(scored, tolerance=1e-9) == 2  # better by more than the tolerance: farther is fine
    assert select(scored, tolerance=1e-3) == 3  # within the tolerance: a tie again
    scored[0] = _trial((1e-2,), 0.2002, 0.0)
    assert select(scored, tolerance=1e-3) == 0  # the default is nearest of all


def test_a_diverged_seed_makes_a_trial_unchoosable():
    diverged = Trial((1e-1,), (), 1.0, (0.9, None))
    assert diverged.score == -math.inf
    assert select([_trial((1e-2,), 0.0, 0.0), diverged], tolerance=1e-9) == 0
    assert Trial((1e-2,), (), 0.0, (0.25, 0.75)).score == 0.5


def test_docs_list_the_declared_spaces():
    assert spaces_markdown(STRATEGIES) in (DOCS / "baselines.md").read_text()
