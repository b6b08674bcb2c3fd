"""Search spaces: the online hyper-parameters ``melonbench tune`` may choose, as each strategy declares them.

Every strategy declares ``space``, a tuple of :class:`Axis`, next to its Config (``()`` when it has nothing to
tune, as Frozen). An axis names a Config field and its grid; the space is the product of the axes. The
strategy's own defaults (its Config's field defaults, the published settings) are the *default point*: it is
always among the trials, and a tie on the objective goes to the point nearest to it (:func:`distance`).

Trials under a budget (:func:`trials`): when the grid has at most ``budget`` points every point is tried;
otherwise the default point and ``budget − 1`` others drawn without replacement by a generator seeded with the
strategy's name (the same trials on every dataset, model and machine). The draw is a prefix of one fixed
permutation, so a larger budget keeps every trial of a smaller one (and re-uses their stored runs).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import typing
from typing import Any

import numpy as np

from melonbench.core.errors import MelonbenchError
from melonbench.online.seeding import derive_seed

Point = tuple[float, ...]

HALF_DECADES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
"""The recommender's online Adam rate in a one-axis space: 1e-4 … 1 in half decades. It reaches 1 because on
Grocery Default's best validation rate is 0.1 (0.3 and 1 are worse): the optimum should lie inside the grid."""

DECADES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
"""The same range in decades, where a second axis multiplies the grid."""


@dataclasses.dataclass(frozen=True)
class Axis:
    """One searched field of a strategy's Config.

    Attributes
    ----------
    name : str
        The Config field (what ``--set name=value`` would set).
    values : tuple of float
        The grid, increasing.
    log : bool
        Distances on this axis are measured in decades (``|log10 v − log10 d|``); otherwise as a fraction of the
        grid's span (``|v − d| / (max − min)``).
    """

    name: str
    values: tuple[float, ...]
    log: bool = True


def space_of(cls: type) -> tuple[Axis, ...]:
    """The declared space of strategy class ``cls`` (a one-line error when it declares none)."""
    space = getattr(cls, "space", None)
    if space is None:
        raise MelonbenchError(
            f"strategy '{getattr(cls, 'name', cls.__name__)}' declares no search space: add `space = (...)` next to "
            "its Config (docs/adding-a-strategy.md)"
        )
    return tuple(space)


def default_point(cls: type) -> Point:
    """The Config's defaults of every searched field, in axis order."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
    return tuple(float(defaults[axis.name]) for axis in space_of(cls))


def grid(cls: type) -> list[Point]:
    """Every point of the space, in grid order (the last axis varies fastest)."""
    return [tuple(float(v) for v in p) for p in itertools.product(*(axis.values for axis in space_of(cls)))]


def trials(cls: type, budget: int) -> list[Point]:
    """The points to try under ``budget``: the default point first, then the others in grid order.

    Deterministic: the whole grid when it fits, else ``budget − 1`` points of a permutation seeded by the
    strategy's name (module docstring). Empty when the strategy has nothing to tune.
    """
    if budget < 1:
        raise MelonbenchError(f"--budget must be at least 1, got {budget}")
    if not space_of(cls):
        return []
    default = default_point(cls)
    others = [p for p in grid(cls) if p != default]
    if len(others) + 1 > budget:
        rng = np.random.default_rng(derive_seed(0, f"tune-trials/{cls.name}"))
        keep = set(rng.permutation(len(others))[: budget - 1].tolist())
        others = [p for i, p in enumerate(others) if i in keep]
    return [default, *others]


def at_edge(cls: type, point: Point) -> list[str]:
    """The settings of ``point`` at the lowest or highest value of their grid (the best may lie beyond)."""
    return [
        axis.name
        for axis, value in zip(space_of(cls), point, strict=True)
        if len(axis.values) > 1 and value in (axis.values[0], axis.values[-1])
    ]


def distance(cls: type, point: Point) -> float:
    """How far ``point`` is from the default point: the sum over axes of each axis's change (see :class:`Axis`)."""
    total = 0.0
    for axis, value, default in zip(space_of(cls), point, default_point(cls), strict=True):
        if axis.log:
            total += abs(math.log10(value) - math.log10(default))
        else:
            span = max(axis.values) - min(axis.values)
            total += abs(value - default) / span if span > 0 else 0.0
    return total


def settings(cls: type, point: Point) -> tuple[tuple[str, str], ...]:
    """``point`` as ``--set`` pairs, each value written in its field's type (``lr=0.001``, an int as ``8``)."""
    hints = typing.get_type_hints(cls.Config)
    out = []
    for axis, value in zip(space_of(cls), point, strict=True):
        out.append((axis.name, str(int(value)) if hints[axis.name] is int else repr(float(value))))
    return tuple(out)


def describe(values: dict[str, Any] | tuple[tuple[str, str], ...]) -> str:
    """``lr=0.01, w_new=8.0`` (``nothing to tune`` when empty), for tables and progress lines."""
    pairs = values.items() if isinstance(values, dict) else values
    return ", ".join(f"{k}={v}" for k, v in pairs) or "nothing to tune"


def space_rows(strategies: dict[str, type]) -> list[tuple[str, str, str, str, str]]:
    """Every strategy's space as rows ``(strategy, setting, grid, default, points)``, for tables."""
    rows = []
    for name, cls in strategies.items():
        space = space_of(cls)
        if not space:
            rows.append((name, "(nothing to tune)", "", "", "0"))
        for i, (axis, default) in enumerate(zip(space, default_point(cls), strict=True)):
            values = ", ".join(f"{v:g}" for v in axis.values) + (" (log)" if axis.log else " (linear)")
            rows.append(
                (name if i == 0 else "", axis.name, values, f"{default:g}", str(len(grid(cls))) if i == 0 else "")
            )
    return rows


def spaces_markdown(strategies: dict[str, type]) -> str:
    """The search space of every strategy as a Markdown table (docs/baselines.md holds this exact text)."""
    lines = ["| strategy | setting | grid | default | points |", "|---|---|---|---|---|"]
    for name, setting, values, default, points in space_rows(strategies):
        name, setting = (f"`{name}`" if name else ""), (f"`{setting}`" if values else setting)
        lines.append(f"| {name} | {setting} | {values} | {default} | {points} |")
    return "\n".join(lines) + "\n"
