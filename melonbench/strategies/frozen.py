"""Frozen: no online update at all, the pre-trained recommender as it was deployed.

Not a strategy of the paper; it is the reference point every online strategy must beat (how much does the
stream drift away from the pre-training data?).
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
class FrozenConfig:
    pass


class Frozen(Strategy):
    name = "frozen"
    label = "Frozen"
    selective = True
    Config = FrozenConfig
    space = ()  # no online update: nothing to tune

    @torch.no_grad()
    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        return self.model.bpr_loss(batch.users, batch.items, batch.negatives)
