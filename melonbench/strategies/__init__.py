"""Online update strategies and their registry (``STRATEGIES``: one explicit dict; one file per strategy).

``base`` is the :class:`Strategy` contract (and B_t^last, shared by the look-ahead strategies); ``default``,
``frozen``, ``eals``, ``mwnet``, ``metasgd``, ``s2meta`` (its cell in ``s2meta_cell``), ``sml`` and the ``melon``
package are the strategies, and ``count`` the update of the reference recommenders without learning;
``lazy_adam``, ``lazy_state`` and ``preprocess`` are what several of them share; ``catalog`` lists them all
(``melonbench strategies``).
"""

from __future__ import annotations

from typing import Any

from melonbench.core.errors import IncompatibleError, MelonbenchError
from melonbench.core.registry import lookup
from melonbench.models import MODELS, is_reference
from melonbench.models.base import Recommender
from melonbench.strategies.base import Strategy, parse_config
from melonbench.strategies.count import Count
from melonbench.strategies.default import Default
from melonbench.strategies.eals import EALS
from melonbench.strategies.frozen import Frozen
from melonbench.strategies.melon import Melon, MelonI, MelonP
from melonbench.strategies.metasgd import MetaSGD
from melonbench.strategies.mwnet import MWNet
from melonbench.strategies.s2meta import S2Meta
from melonbench.strategies.sml import SML

STRATEGIES: dict[str, type[Strategy]] = {
    "count": Count,
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


def supporting(model: str) -> list[str]:
    """The registered strategies that declare ``model`` (sorted)."""
    return sorted(name for name, cls in STRATEGIES.items() if model in cls.supports)


def default_strategy(model: str) -> str:
    """The strategy a run of ``model`` takes when none is named: ``default`` where it applies, else the model's only
    strategy (``count`` for the reference recommenders without learning)."""
    lookup("model", model, MODELS)
    if model in Default.supports:
        return "default"
    usable = supporting(model)
    if len(usable) != 1:
        raise MelonbenchError(f"model '{model}' needs a --strategy (it supports: {', '.join(usable) or 'none'})")
    return usable[0]


def check_compatible(strategy: str, model: str) -> None:
    """Refuse a strategy/model pair the strategy does not declare, before any work starts."""
    cls = get_strategy(strategy)
    if model not in cls.supports:
        hint = f"; model '{model}' runs with: {', '.join(supporting(model))}" if is_reference(model) else ""
        raise IncompatibleError(
            f"strategy '{strategy}' does not support model '{model}' (it supports: {', '.join(sorted(cls.supports))})"
            + (f": {cls.incompatibility}" if getattr(cls, "incompatibility", "") else "")
            + hint
        )


def build_strategy(name: str, model: Recommender, params: tuple[tuple[str, str], ...], seed: int) -> Strategy:
    """Instantiate strategy ``name`` for ``model`` with ``--set`` overrides applied to its config."""
    cls = get_strategy(name)
    config: Any = parse_config(cls.Config, params)
    return cls(model, config, seed)
