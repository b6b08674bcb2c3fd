"""The recommender protocol every update strategy works against.

A recommender scores (user, item) pairs and gives per-interaction BPR losses; it owns no optimiser. Strategies
reach its parameters through three named groups, so that they can update only the rows a batch touches:
tables indexed by user id, tables indexed by item id, and everything else (dense weights).

Shapes in docstrings: ``B`` interactions in a batch, ``C`` candidates per interaction, ``N`` = ``n_items``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from melonbench.core.config import PretrainConfig

EMBEDDING_STD = 0.01
"""Standard deviation of the N(0, std²) initialisation of every embedding and bias table (as the reference)."""


def normal_embedding(num: int, dim: int) -> nn.Embedding:
    """An ``nn.Embedding(num, dim)`` initialised N(0, 0.01²), the reference code's choice."""
    table = nn.Embedding(num, dim)
    nn.init.normal_(table.weight, mean=0.0, std=EMBEDDING_STD)
    return table


class Recommender(nn.Module):
    """A recommender that scores candidate items for users.

    Parameters
    ----------
    n_users, n_items : int
        Sizes of the dense id ranges (ids are ``0 .. n - 1``).
    dim : int
        Embedding size (the paper: 64).

    Attributes
    ----------
    learnable : bool
        False for the reference recommenders without parameters (``pop``, ``recent-pop``): they are "pre-trained"
        by counting, and only the ``count`` strategy, which advances their counts, runs on them.
    label : str
        Name shown in tables.

    Notes
    -----
    Subclasses set ``name`` (the registry key) and implement :meth:`score`, :meth:`score_all`,
    :meth:`user_tables`, :meth:`item_tables` and :meth:`dense_parameters`. The three parameter groups must
    together hold every parameter exactly once. Scoring is deterministic (no dropout), so a model evaluated
    twice on the same inputs gives the same scores.
    """

    name: ClassVar[str]
    label: ClassVar[str] = ""
    learnable: ClassVar[bool] = True

    def __init__(self, n_users: int, n_items: int, dim: int = 64) -> None:
        super().__init__()
        if n_users < 1 or n_items < 1 or dim < 1:
            raise ValueError(f"n_users, n_items and dim must be positive, got {n_users}, {n_items}, {dim}")
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Score ``C`` candidate items per user.

        Parameters
        ----------
        users : Long[B]
            User ids.
        items : Long[B, C]
            Candidate item ids; row ``b`` is scored for ``users[b]``.

        Returns
        -------
        Float[B, C]
            Higher means more likely to be interacted with.
        """
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Score the whole catalogue for each user, faster than :meth:`score` on ``arange(n_items)``.

        Parameters
        ----------
        users : Long[B]
            User ids.

        Returns
        -------
        Float[B, n_items]
            Equal to ``score(users, arange(n_items).expand(B, -1))`` up to float rounding.
        """
        raise NotImplementedError

    def bpr_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Per-interaction BPR loss ``-log σ(s_pos - s_neg)``, computed stably as ``softplus(s_neg - s_pos)``.

        Parameters
        ----------
        users, pos, neg : Long[B]
            User, positive item and sampled negative item of each interaction.

        Returns
        -------
        Float[B]
            Not reduced: strategies weight interactions individually.
        """
        scores = self.score(users, torch.stack((pos, neg), dim=1))  # [B, 2]
        return F.softplus(scores[:, 1] - scores[:, 0])

    def forward(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """The per-interaction BPR loss (same as :meth:`bpr_loss`).

        Being ``forward``, it lets ``torch.func.functional_call(model, params, (users, pos, neg))`` evaluate the
        loss under substituted parameters: the differentiable look-ahead of the meta-learning strategies.
        """
        return self.bpr_loss(users, pos, neg)

    def user_tables(self) -> dict[str, nn.Embedding]:
        """Every table indexed by user id (embeddings and biases), keyed by attribute name."""
        raise NotImplementedError

    def item_tables(self) -> dict[str, nn.Embedding]:
        """Every table indexed by item id (embeddings and biases), keyed by attribute name."""
        raise NotImplementedError

    def dense_parameters(self) -> dict[str, nn.Parameter]:
        """Every parameter not in a user or item table, keyed by its ``named_parameters`` name."""
        raise NotImplementedError

    @classmethod
    def config_kwargs(cls, config: PretrainConfig) -> dict[str, Any]:
        """The constructor arguments this model takes from the pre-training config (``dim``; more for some)."""
        return {"dim": config.dim}

    def hparams(self) -> dict[str, Any]:
        """The constructor arguments plus ``name``: enough to rebuild the model and to hash its configuration."""
        return {"name": self.name, "n_users": self.n_users, "n_items": self.n_items, "dim": self.dim}
