"""The recommenders and their registry (``MODELS``): ``base`` (the :class:`Recommender` contract: scores,
per-interaction losses, which tables hold user and item rows), ``bpr`` (BPR-MF), ``ncf`` (GMF + MLP), and the
reference recommenders without learning in ``popularity`` (``pop``, ``recent-pop``)."""

from __future__ import annotations

from typing import Any

from melonbench.core.registry import lookup
from melonbench.models.base import Recommender
from melonbench.models.bpr import BPR
from melonbench.models.ncf import NCF
from melonbench.models.popularity import Popularity, RecentPopularity

MODELS: dict[str, type[Recommender]] = {"bpr": BPR, "ncf": NCF, "pop": Popularity, "recent-pop": RecentPopularity}


def build_model(name: str, n_users: int, n_items: int, **kwargs: Any) -> Recommender:
    """Build a registered recommender.

    Parameters
    ----------
    name : str
        Registry key (``bpr``, ``ncf``, ``pop`` or ``recent-pop``).
    n_users, n_items : int
        Sizes of the dense id ranges.
    **kwargs
        Further constructor arguments (``dim``; ``layers`` for NCF; ``window`` for recent-pop).

    Raises
    ------
    UnknownNameError
        For a name not in :data:`MODELS`, with the closest suggestion.
    """
    return lookup("model", name, MODELS)(n_users, n_items, **kwargs)


def is_reference(name: str) -> bool:
    """Whether ``name`` is a registered recommender without learnable parameters (a reference row in reports)."""
    cls = MODELS.get(name)
    return cls is not None and not cls.learnable


__all__ = ["BPR", "MODELS", "NCF", "Popularity", "RecentPopularity", "Recommender", "build_model", "is_reference"]
