"""The strategy seam: how a pre-trained recommender is updated on each online batch.

A strategy is built with the recommender, its own config dataclass and a seed. It owns its optimiser(s) and any
meta-model; the replay loop only calls :meth:`Strategy.online_step` after a batch has been ranked. Adding a
strategy means one file with one subclass and one line in ``melonbench/strategies/__init__.py``.
"""

from __future__ import annotations

import abc
import dataclasses
import typing
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from melonbench.core.errors import MelonbenchError
from melonbench.online.negatives import sample_training_negatives
from melonbench.strategies.space import Axis

if TYPE_CHECKING:
    from melonbench.models.base import Recommender
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


class Strategy(abc.ABC):
    """Base class of every online update strategy.

    Class attributes
    ----------------
    name : str
        Registry name (``default``, ``melon``, ...).
    label : str
        Name shown in tables.
    supports : frozenset[str]
        Model names the strategy is defined for; the CLI refuses other pairs before any work.
    selective : bool
        True when a step leaves every embedding row the batch does not touch unchanged (checked by the
        contract tests).
    Config : type
        Frozen dataclass of hyper-parameters, each with a default that cites its source.
    meta : bool
        True when the strategy has a meta-model that is pre-trained offline (``pretrain_step``,
        ``meta_state_dict``); its Config then has a ``meta_epochs`` field.
    incompatibility : str
        Why a model is not in ``supports`` (shown when the CLI refuses the pair).
    space : tuple[Axis, ...]
        The online hyper-parameters ``melonbench tune`` searches (``strategies.space``), declared next to the
        Config; ``()`` when there is nothing to tune. Every strategy must declare it (no default here).

    Instance attributes
    -------------------
    capture_lr : bool
        Set by the runner (``--capture-lr``): ``online_step`` should then store the learning-rate matrix W it
        applied (paper Eq. 1) in ``captured_lr`` as ``Float[B, P]``: one row per interaction of the batch, one
        column per parameter *position* the interaction touches ((slot, coordinate) for embedding rows, e.g.
        user / positive / negative × dim; plus every dense weight where the strategy updates them).
    captured_lr : torch.Tensor | None
        The last captured matrix (``None`` when the strategy does not support capture).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    supports: ClassVar[frozenset[str]] = frozenset({"bpr", "ncf"})
    selective: ClassVar[bool] = False
    meta: ClassVar[bool] = False
    incompatibility: ClassVar[str] = ""
    Config: ClassVar[type]
    space: ClassVar[tuple[Axis, ...]]

    def __init__(self, model: Recommender, config: Any, seed: int) -> None:
        self.model = model
        self.config = config
        self.seed = seed
        self.capture_lr = False
        self.captured_lr: torch.Tensor | None = None

    @abc.abstractmethod
    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        """Update the recommender on ``batch`` (already ranked). Return ``Float[B]`` per-interaction losses
        before the update (detached). Must not modify the batch's tensors."""

    def pretrain_step(self, batch: Batch, history: History) -> torch.Tensor | None:
        """One meta-model pre-training step (meta strategies only); see ``melonbench.pipeline.meta_pretrain``.

        Called on a throw-away copy of the pre-trained recommender, in time order over the pre-training part,
        so the same look-ahead → meta step → update sequence as online applies. A meta strategy must return the
        batch's per-interaction losses ``Float[B]`` (as :meth:`online_step`): meta pre-training stops with a
        :class:`~melonbench.core.errors.DivergenceError` when their mean is not finite.
        """
        return None

    def meta_state_dict(self) -> dict[str, Any]:
        """The meta-model's pre-trained state (weights and meta-optimiser), cached by content hash."""
        return {}

    def load_meta_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`meta_state_dict` returned."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the strategy bit-identically (optimiser, meta-model, RNG)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def touched_rows(model: Recommender, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The user rows and item rows (sorted, unique) that scoring ``batch`` with its training negatives uses."""
    users = torch.unique(batch.users)
    items = torch.unique(torch.cat([batch.items, batch.negatives]))
    return users, items


def lookahead_batch(
    history: History, batch: Batch, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B_t^last as ``(users, items, negatives)``, ``Long[M]`` each (``M`` may be 0 at the start of a stream).

    Each negative is drawn for the interaction's own position ``p`` (excluding the positive and the user's items
    before ``p``) among the items that exist before the current batch; two host synchronisations (the size of
    B_t^last, and the negative sampler's).
    """
    positions = history.last_positions(batch.users, batch.items)  # [M]
    users, items = history.users[positions], history.items[positions]
    if positions.shape[0] == 0:
        return users, items, items.clone()
    exists_at = torch.full_like(positions, history.cursor)
    negatives = sample_training_negatives(history, users, items, positions, gen, exist_positions=exists_at)
    return users, items, negatives


def padded_lookahead_batch(
    history: History, batch: Batch, gen: torch.Generator, bucket: int = 0
) -> tuple[torch.Tensor, ...] | None:
    """B_t^last at a fixed size for CUDA graphs: ``(users, items, negatives, valid)``, ``[S]`` each.

    The same draws as :func:`lookahead_batch` (it is called), B_t^last's ``M`` interactions first, then padding
    (id 0, ``valid`` 0; ``valid`` is ``Float``). ``S = 2 |B_t|`` (B_t^last's largest size), or with ``bucket``
    ``M`` rounded up to a multiple of it (at most ``2 |B_t|``): less padding, one graph per size met. ``None``
    when B_t^last is empty: a step then has nothing to look ahead on.
    """
    users, items, negatives = lookahead_batch(history, batch, gen)
    m, size = users.shape[0], 2 * len(batch)
    if m == 0:
        return None
    if bucket > 0:
        size = min(size, -(-m // bucket) * bucket)
    padded = [torch.cat([t, t.new_zeros(size - m)]) for t in (users, items, negatives)]
    valid = (torch.arange(size, device=users.device) < m).float()
    return (*padded, valid)


def sorted_rows(ids: torch.Tensor, valid: torch.Tensor | None = None):
    """``ids`` sorted, with repeats, as a fixed-length row list: ``(rows, first, keep)``, ``Long[n]`` ×2, ``Bool[n]``.

    ``first[k]``: the position of the first occurrence of ``rows[k]``; ``keep[k]``: ``rows[k]`` is a first occurrence
    and comes from a ``valid`` entry (the padding sorts last). Fixed shapes, no host synchronisation.
    """
    n = ids.shape[0]
    key = ids if valid is None else torch.where(valid > 0, ids, ids.max() + 1 + ids)  # padding after every real id
    key, order = torch.sort(key)
    rows = ids[order]
    new = torch.ones(n, dtype=torch.bool, device=ids.device)
    new[1:] = key[1:] != key[:-1]
    position = torch.arange(n, device=ids.device)
    first = torch.cummax(torch.where(new, position, 0), 0).values
    keep = new if valid is None else new & (valid[order] > 0)
    return rows, first, keep


def parse_config(config_cls: type, params: tuple[tuple[str, str], ...]) -> Any:
    """Build ``config_cls`` from ``--set key=value`` strings, converting each value to the field's type.

    Raises
    ------
    MelonbenchError
        For an unknown key (naming the valid ones) or a value that does not convert.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    values: dict[str, Any] = {}
    for key, raw in params:
        if key not in fields:
            raise MelonbenchError(
                f"unknown setting '{key}' for {config_cls.__qualname__}; "
                + (f"valid: {', '.join(sorted(fields))}" if fields else "it takes no settings")
            )
        kind = hints[key]
        try:
            if kind is bool:
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("1", "true", "yes")
            else:
                values[key] = kind(raw)
        except (TypeError, ValueError):
            raise MelonbenchError(f"setting '{key}' expects {getattr(kind, '__name__', kind)}, got '{raw}'") from None
    return config_cls(**values)
