"""Looking names up in the explicit registries, with a helpful error for unknown names."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

from melonbench.core.errors import UnknownNameError

T = TypeVar("T")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """Return ``table[name]``, or raise a one-line error that suggests the closest known name.

    Parameters
    ----------
    kind : str
        What is being looked up, for the message ("dataset", "strategy", ...).
    name : str
        The requested name.
    table : Mapping[str, T]
        The registry.

    Raises
    ------
    UnknownNameError
        ``Unknown strategy 'melom'. Did you mean 'melon'? Available: default, melon``.
    """
    if name in table:
        return table[name]
    available = ", ".join(sorted(table))
    close = difflib.get_close_matches(name.lower(), list(table), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownNameError(f"Unknown {kind} '{name}'.{hint} Available: {available}")
