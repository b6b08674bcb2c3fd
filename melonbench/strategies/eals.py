"""eALS: fine-tuning with a fixed, larger weight on new interactions (an approximation of He et al., SIGIR 2016).

He et al.'s element-wise ALS is a whole-data alternating least squares for matrix factorisation that gives new
interactions a weight ``w_new`` and missing entries popularity-based weights. It is not defined for NCF or for
a BPR loss, so, as the MeLON authors did for their Table 2, we keep only its core idea: **new interactions count
``w_new`` times more** (Kim et al. 2022, Sec. 5.1; their unreleased code multiplies the online learning rate by 4).
This is *not* eALS itself; tables should call it "eALS (new-data weighting)".

The update is Default's (Adam, lr η, weight decay λ; one step per batch on the mean BPR loss) with the step
scaled by ``w_new``. How the scale is applied is a setting, because under Adam the two readings differ:

- ``scale = "lr"`` (default): Adam with learning rate ``w_new · η``, so every step, weight decay included, is
  exactly ``w_new`` times Default's from the same state: W = w_new · η / n (Eq. 1), as the authors' code does.
- ``scale = "loss"``: minimise ``w_new · mean(ℓ)``, the literal loss reweighting. The gradient is ``w_new``
  times Default's (the step would be too under plain SGD), but Adam normalises gradient scale away, so the step
  changes only through the balance against weight decay and ε; close to Default in practice.

``w_new`` is tuned on validation HR@5 in the paper (default 4, the value the authors' code uses).
``melonbench tune --strategy eals`` searches it together with ``lr`` (``space`` below; docs/baselines.md).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from melonbench.core.errors import MelonbenchError
from melonbench.strategies.default import Default, DefaultConfig
from melonbench.strategies.space import Axis

if TYPE_CHECKING:
    from melonbench.models.base import Recommender


@dataclasses.dataclass(frozen=True)
class EALSConfig(DefaultConfig):
    w_new: float = 4.0  # weight of new interactions: the MeLON authors' code (×4 online lr); tuned on validation
    scale: str = "lr"  # "lr": step × w_new (authors' code); "loss": loss × w_new (literal reweighting)


class EALS(Default):
    name = "eals"
    label = "eALS"
    Config = EALSConfig
    # the paper tunes w_new on validation; with scale=lr the step is w_new · lr, so the two axes span 1e-4 … 0.8
    space = (Axis("lr", (1e-4, 1e-3, 1e-2, 1e-1)), Axis("w_new", (1.0, 2.0, 4.0, 8.0)))

    def __init__(self, model: Recommender, config: EALSConfig, seed: int) -> None:
        if config.scale not in ("lr", "loss"):
            raise MelonbenchError(f"eals setting 'scale' must be 'lr' or 'loss', got '{config.scale}'")
        if not config.w_new > 0:
            raise MelonbenchError(f"eals setting 'w_new' must be positive, got {config.w_new}")
        step_lr = config.lr * config.w_new if config.scale == "lr" else config.lr
        super().__init__(model, dataclasses.replace(config, lr=step_lr), seed)
        self.config = config  # the user's settings, not the derived optimiser lr, go into manifests and hashes

    def loss_weight(self, losses: torch.Tensor) -> torch.Tensor:
        """``w_new · mean(ℓ)`` when ``scale == "loss"``; otherwise Default's mean (the lr carries the weight)."""
        mean = losses.mean()
        return self.config.w_new * mean if self.config.scale == "loss" else mean
