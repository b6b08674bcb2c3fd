"""The recommenders and their registry (``MODELS``): ``base`` (the :class:`Recommender` contract: scores,
per-interaction losses, which tables hold user and item rows), ``bpr`` (BPR-MF) and ``ncf`` (GMF + MLP)."""

from __future__ import annotations

from typing import Any

from melonbench.core.registry import lookup
from melonbench.models.base import Recommender
from melonbench.models.bpr import BPR
from melonbench.models.ncf import NCF

MODELS: dict[str, type[Recommender]] = {"bpr": BPR, "ncf": NCF}


def build_model(name: str, n_users: int, n_items: int, **kwargs: Any) -> Recommender:
    """Build a registered recommender.

    Parameters
    ----------
    name : str
        Registry key (``bpr`` or ``ncf``).
    n_users, n_items : int
        Sizes of the dense id ranges.
    **kwargs
        Further constructor arguments (``dim``; ``layers`` for NCF).

    Raises
    ------
    UnknownNameError
        For a name not in :data:`MODELS`, with the closest suggestion.
    """
    return lookup("model", name, MODELS)(n_users, n_items, **kwargs)


__all__ = ["BPR", "MODELS", "NCF", "Recommender", "build_model"]
