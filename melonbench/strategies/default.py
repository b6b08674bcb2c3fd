"""Default: plain fine-tuning of the recommender on each online batch.

The paper's baseline (Kim et al., AAAI 2022, Sec. 5.1): Adam with lr 1e-3 and weight decay 1e-3 (the reference
code uses 1e-6), one step per batch on the mean BPR loss of B_t with one fresh training negative per interaction,
i.e. the learning-rate matrix W = η/n everywhere (Eq. 1).

``sparse=False`` (default) is the definition: ``torch.optim.Adam`` over all parameters, so weight decay and
Adam's momentum also move rows the batch does not touch. ``sparse=True`` (``--set sparse=true`` or
``--sparse-updates``) updates only the rows the batch touches (lazy Adam, per-row moments); it is faster on big
catalogues and makes the strategy selective, but it is a different optimiser: say which one you report.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from melonbench.online.cuda_graph import GraphedStep, load_optimizer_state
from melonbench.strategies.base import Strategy, touched_rows
from melonbench.strategies.lazy_adam import LazyAdam
from melonbench.strategies.space import HALF_DECADES, Axis

if TYPE_CHECKING:
    from melonbench.models.base import Recommender
    from melonbench.online.history import History
    from melonbench.online.stream import Batch


@dataclasses.dataclass(frozen=True)
class DefaultConfig:
    lr: float = 1e-3  # paper, Sec. 5.1
    weight_decay: float = 1e-3  # paper, Sec. 5.1 (reference code: 1e-6)
    sparse: bool = False  # lazy Adam on touched rows only (not the paper's optimiser)
    cuda_graphs: bool = True  # on CUDA, replay each batch's step as a CUDA graph (docs/melon.md; dense Adam only)


class Default(Strategy):
    name = "default"
    label = "Default"
    Config = DefaultConfig
    # melonbench tune: the online Adam rate around the paper's fixed 1e-3; weight decay stays the paper's
    space = (Axis("lr", HALF_DECADES),)

    def __init__(self, model: Recommender, config: DefaultConfig, seed: int) -> None:
        super().__init__(model, config, seed)
        graphs = config.cuda_graphs and not config.sparse and next(model.parameters()).device.type == "cuda"
        if config.sparse:
            self.optimizer: torch.optim.Optimizer | LazyAdam = LazyAdam(
                model.user_tables(),
                model.item_tables(),
                model.dense_parameters(),
                lr=config.lr,
                weight_decay=config.weight_decay,
            )
        else:
            # fused: one kernel over every parameter instead of a dozen passes per tensor (same maths); capturable:
            # the step counter lives on the GPU, so that a CUDA graph's replay advances it
            self.optimizer = torch.optim.Adam(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True, capturable=graphs
            )
        # lazy Adam's row selection (`unique`) has a data-dependent size: no CUDA graph for it
        self._graphed = GraphedStep(self._update, enabled=graphs)

    @property
    def selective(self) -> bool:  # type: ignore[override]
        return self.config.sparse

    def loss_weight(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar this strategy minimises; subclasses reweight (eALS)."""
        return losses.mean()

    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        if isinstance(self.optimizer, LazyAdam):
            losses = self.model.bpr_loss(batch.users, batch.items, batch.negatives)
            self.optimizer.zero_grad()
            self.loss_weight(losses).backward()
            self.optimizer.step(*touched_rows(self.model, batch))
            return losses.detach()
        if self.capture_lr:  # subclasses capture in loss_weight: keep that on the host's side of a graph
            return self._update(batch.users, batch.items, batch.negatives)
        return self._graphed(batch.users, batch.items, batch.negatives)

    def _update(self, users: torch.Tensor, items: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """One Adam step on ``loss_weight`` of the batch's losses (fixed shapes, no host synchronisation)."""
        losses = self.model.bpr_loss(users, items, negatives)
        self.optimizer.zero_grad()
        self.loss_weight(losses).backward()
        self.optimizer.step()
        return losses.detach()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if isinstance(self.optimizer, LazyAdam):
            self.optimizer.load_state_dict(state["optimizer"])
        else:
            load_optimizer_state(self.optimizer, state["optimizer"], self._graphed)
