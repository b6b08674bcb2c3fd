"""Online update strategies and their registry (``STRATEGIES``: one explicit dict; one file per strategy).

``base`` is the :class:`Strategy` contract (and B_t^last, shared by the look-ahead strategies); ``default``,
``frozen``, ``eals``, ``mwnet``, ``metasgd``, ``s2meta`` (its cell in ``s2meta_cell``), ``sml`` and the ``melon``
package are the strategies; ``lazy_adam``, ``lazy_state`` and ``preprocess`` are what several of them share.
"""

from __future__ import annotations

from typing import Any

from melonbench.core.errors import IncompatibleError
from melonbench.core.registry import lookup
from melonbench.models.base import Recommender
from melonbench.strategies.base import Strategy, parse_config
from melonbench.strategies.default import Default
from melonbench.strategies.eals import EALS
from melonbench.strategies.frozen import Frozen
from melonbench.strategies.melon import Melon, MelonI, MelonP
from melonbench.strategies.metasgd import MetaSGD
from melonbench.strategies.mwnet import MWNet
from melonbench.strategies.s2meta import S2Meta
from melonbench.strategies.sml import SML

STRATEGIES: dict[str, type[Strategy]] = {
    "default": Default,
    "eals": EALS,
    "frozen": Frozen,
    "melon": Melon,
    "melon-i": MelonI,
    "melon-p": MelonP,
    "metasgd": MetaSGD,
    "mwnet": MWNet,
    "s2meta": S2Meta,
    "sml": SML,
}


def get_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name`` (one-line error with a suggestion otherwise)."""
    return lookup("strategy", name, STRATEGIES)


def check_compatible(strategy: str, model: str) -> None:
    """Refuse a strategy/model pair the strategy does not declare, before any work starts."""
    cls = get_strategy(strategy)
    if model not in cls.supports:
        raise IncompatibleError(
            f"strategy '{strategy}' does not support model '{model}' (it supports: {', '.join(sorted(cls.supports))})"
            + (f": {cls.incompatibility}" if getattr(cls, "incompatibility", "") else "")
        )


def build_strategy(name: str, model: Recommender, params: tuple[tuple[str, str], ...], seed: int) -> Strategy:
    """Instantiate strategy ``name`` for ``model`` with ``--set`` overrides applied to its config."""
    cls = get_strategy(name)
    config: Any = parse_config(cls.Config, params)
    return cls(model, config, seed)
