"""Count: the online update of the reference recommenders without learning (``pop``, ``recent-pop``).

Not a strategy of the paper. After a batch is ranked, it counts the batch's interactions into the model
(``Popularity.observe``: ``recent-pop`` also lets the interactions that leave its window go), exactly where every
other strategy takes its gradient step, so the replay loop treats the references like any other run. It is the only
strategy these models support, and the one ``melonbench run -m pop`` picks when no ``--strategy`` is given
(:func:`melonbench.strategies.default_strategy`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from melonbench.strategies.base import Strategy

if TYPE_CHECKING:
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


@dataclasses.dataclass(frozen=True)
class CountConfig:
    pass


class Count(Strategy):
    name = "count"
    label = "Count"
    supports = frozenset({"pop", "recent-pop"})
    incompatibility = "it only advances the counts of a reference recommender without learnable parameters"
    Config = CountConfig
    space = ()  # counting has no settings (recent-pop's window W is the model's, set with `--window`)

    @torch.no_grad()
    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        # The BPR loss of the counts before the update: reported like every strategy's loss, it trains nothing.
        losses = self.model.bpr_loss(batch.users, batch.items, batch.negatives)
        start = history.cursor  # the batch is positions start .. start + len(batch) - 1 (the history's cursor)
        self.model.observe(history.items, start, start + len(batch))  # type: ignore[operator]
        return losses
