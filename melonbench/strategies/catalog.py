"""``melonbench strategies``: every registered strategy and recommender, and one strategy's settings.

Everything shown is read from the registries and the code itself (class attributes, docstrings, the ``Config``
dataclass and the comments beside its fields), so a new strategy is listed, described and documented by the one
file that defines it.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

from rich.console import Console
from rich.table import Table

from melonbench.models import MODELS
from melonbench.strategies import STRATEGIES, get_strategy, supporting


@dataclasses.dataclass(frozen=True)
class Setting:
    """One field of a strategy's ``Config``: what ``--set name=value`` changes."""

    name: str
    type: str
    default: Any
    note: str  # the comment beside the field in the source (where the default comes from), or ""


def summary(cls: type) -> str:
    """One line that says what ``cls`` is: the first paragraph of its own docstring, else of its module's.

    A leading ``Name:`` is dropped (the table shows the label beside it), and ``code`` markup becomes plain text.
    """
    doc = cls.__dict__.get("__doc__") or inspect.getmodule(cls).__doc__ or ""
    first = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    named = re.match(r"[^\s:]+: (.)", first)
    if named:  # "Default: plain fine-tuning ..." → "Plain fine-tuning ..."
        first = named.group(1).upper() + first[named.end() :]
    return first.replace("``", "")


def models_of(name: str) -> list[str]:
    """The recommenders strategy ``name`` supports, in the order of the model registry."""
    return [m for m in MODELS if m in get_strategy(name).supports]


def settings(name: str) -> list[Setting]:
    """The fields of strategy ``name``'s ``Config``, in declaration order, with their defaults and notes."""
    config = get_strategy(name).Config
    notes: dict[str, str] = {}
    for cls in reversed(config.__mro__):  # a subclass's comment wins over its base's
        if dataclasses.is_dataclass(cls):
            notes.update(_field_comments(cls))
    hints = typing.get_type_hints(config)
    return [
        Setting(f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), f.default, notes.get(f.name, ""))
        for f in dataclasses.fields(config)
    ]


def _field_comments(cls: type) -> dict[str, str]:
    """``field: type = default  # note`` → ``{field: note}``, read from the class's source; a field without a comment
    of its own takes the comment lines right above it. Comments are the tokenizer's, so a ``#`` inside a string
    default is not taken for one."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (a frozen install): the settings are still listed, without notes
        return {}
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    out: dict[str, str] = {}
    above: list[str] = []
    for number, line in enumerate(source.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            above.append(comments.get(number, ""))
            continue
        field = re.match(r"\s*(\w+)\s*:", line)
        if field:
            out[field.group(1)] = comments.get(number) or " ".join(above)
        above = []
    return out


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def print_strategies(console: Console) -> None:
    """Print every registered strategy (label, models, meta-model, summary), then every recommender."""
    table = Table(title="melonbench strategies (melonbench run --strategy NAME)", title_justify="left")
    for column in ("name", "label", "models", "meta-model", "description"):
        table.add_column(column)
    for name, cls in STRATEGIES.items():
        table.add_row(name, cls.label, ", ".join(models_of(name)), _yes(cls.meta), summary(cls))
    console.print(table)
    models = Table(title="recommenders (melonbench run --model NAME)", title_justify="left")
    for column in ("name", "learns", "strategies", "description"):
        models.add_column(column)
    for name, cls in MODELS.items():
        models.add_row(name, _yes(cls.learnable), ", ".join(supporting(name)), summary(cls))
    console.print(models)
    console.print("melonbench strategies --show NAME: a strategy's settings (melonbench run --set KEY=VALUE).")


def print_settings(name: str, console: Console) -> None:
    """Print strategy ``name``: what it is, what it supports, and every setting with its default and source."""
    cls = get_strategy(name)
    console.print(f"[bold]{cls.label}[/] ({name}): {summary(cls)}", highlight=False)
    console.print(f"models: {', '.join(models_of(name))}", highlight=False)
    if cls.incompatibility:
        console.print(f"other models: {cls.incompatibility}", highlight=False)
    console.print(f"meta-model pre-trained offline: {'yes' if cls.meta else 'no'}", highlight=False)
    rows = settings(name)
    if not rows:
        console.print("settings: none", highlight=False)
        return
    table = Table(title=f"settings of {name} (melonbench run -s {name} --set KEY=VALUE)", title_justify="left")
    for column in ("setting", "type", "default", "note"):
        table.add_column(column)
    for s in rows:
        table.add_row(s.name, s.type, repr(s.default) if isinstance(s.default, str) else str(s.default), s.note)
    console.print(table)
