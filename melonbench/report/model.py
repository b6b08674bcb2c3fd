"""The report as data: tables of formatted cells that every renderer (terminal, Markdown, LaTeX) shares.

Builders decide *what* a cell says (numbers are formatted here, once); renderers only decide how a table is
drawn. Text is plain Unicode (``±``, ``τ``, ``S²Meta``); the LaTeX renderer translates it.
"""

from __future__ import annotations

import dataclasses
import math

from melonbench.models import is_reference
from melonbench.strategies import STRATEGIES

# The paper's row order (Table 2); anything else follows alphabetically (Frozen, the ablations, new strategies), and
# the reference recommenders without learning (pop, recent-pop) come last.
PREFERRED_ORDER = ("default", "eals", "mwnet", "metasgd", "s2meta", "sml", "melon")
# Table 3: the two single-direction variants of MeLON and MeLON itself.
ABLATION = ("melon-i", "melon-p", "melon")
RANKINGS = {"sampled": "sampled ranking (1 positive + 99 negatives)", "full": "full ranking (every existing item)"}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One table cell: its text and an emphasis mark (``best`` → bold, ``second`` → underlined)."""

    text: str
    mark: str = ""


@dataclasses.dataclass(frozen=True)
class Table:
    """A titled table.

    Attributes
    ----------
    key : str
        Stable identifier (``accuracy-sampled``, ``timing``, ...).
    title : str
        Caption.
    columns : tuple[str, ...]
        Column headers.
    groups : tuple[tuple[str, int], ...]
        Spanning headers over consecutive columns, ``(label, span)``, covering all columns (``""`` for none);
        empty when the table has no spanning header.
    rows : tuple[tuple[Cell, ...], ...]
        Body rows.
    notes : tuple[str, ...]
        Footnotes printed under the table.
    label_columns : int
        Leading columns that hold labels (left-aligned); the others hold numbers (right-aligned).
    wrap : tuple[int, ...]
        Label columns that hold an order of strategies (``A > B (4/5) > C``), too long for one line of a page:
        LaTeX shares the line's width among them and breaks their lines after a ``>``, never inside a name; the
        terminal and Markdown need nothing.
    """

    key: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    groups: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = ()
    label_columns: int = 2
    wrap: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything ``melonbench report`` renders: a header, the tables, and warnings worth a reader's attention."""

    header: tuple[str, ...]
    tables: tuple[Table, ...]
    warnings: tuple[str, ...] = ()


def strategy_order(names: set[str] | list[str]) -> list[str]:
    """Strategies in the paper's row order, the others alphabetically after them, then the reference rows."""
    rank = {name: i for i, name in enumerate(PREFERRED_ORDER)}
    return sorted(set(names), key=lambda n: (is_reference(n), rank.get(n, len(rank)), n))


def strategy_label(name: str, fallback: str | None = None) -> str:
    """The registry's label of ``name`` (read at render time), else ``fallback`` (the run's manifest), else the name."""
    cls = STRATEGIES.get(name)
    return getattr(cls, "label", None) or fallback or name


def incompatibility(strategy: str, model: str) -> str | None:
    """Why ``strategy`` is declared not to run on ``model`` (a footnote text), or None when it is not declared so."""
    cls = STRATEGIES.get(strategy)
    if cls is None or model in cls.supports:
        return None
    why = getattr(cls, "incompatibility", "")
    supported = ", ".join(m.upper() for m in sorted(cls.supports))
    return f"{strategy_label(strategy)} is defined for {supported} only" + (f" ({why})" if why else "")


def model_label(name: str) -> str:
    return name.upper() if name else "References"


def fmt_mean_se(mean: float, se: float, digits: int = 4) -> str:
    """``0.1234 ± 0.0012``; the ± part is left out for a single seed (no standard error)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(se) else f" ± {se:.{digits}f}")


def fmt_seeds(k: int, n: int) -> str:
    """`` (4/5)`` after a cell that stands on ``k`` of the ``n`` seeds asked for; nothing when it has them all."""
    return f" ({k}/{n})" if k < n else ""


SEEDS_NOTE = (
    "(k/n): the cell stands on the k of n seeds that finished; the others failed (see Failed runs) or are missing."
)
FAILED_NOTE = "failed: every run of the cell failed (see Failed runs)."


def fmt_p(p: float) -> str:
    """A p-value that never reads 0: ``< 1e-16`` below double precision's resolution, n/a when undefined."""
    if math.isnan(p):
        return "n/a"
    if p < 1e-16:
        return "< 1e-16"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def fmt_seconds(s: float) -> str:
    return "–" if math.isnan(s) else f"{s:.4f}"


def mark_best(values: list[float]) -> list[str]:
    """Marks for a column of means: ``best`` for the highest, ``second`` for the next distinct value (ties share)."""
    distinct = sorted({v for v in values if not math.isnan(v)}, reverse=True)
    top = distinct[:2]
    return ["best" if top and v == top[0] else "second" if len(top) > 1 and v == top[1] else "" for v in values]
