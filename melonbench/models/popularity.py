"""Reference recommenders without learning: all-time popularity (``pop``) and recent popularity (``recent-pop``).

They score an item by how often it was interacted with: ``pop`` over everything revealed so far, ``recent-pop``
over the last ``W`` interactions of the stream. They tell "learned the users" from "follows what is popular now":
the same score for every user, no learnable parameter. Their counts are the model's state (buffers, saved and
restored with it); "pre-training" counts the pre-training part, and online the ``count`` strategy advances them
after each batch is ranked, like every strategy's update.

Ties are broken as for every model: against the positive (``melonbench.online.metrics``). With counts, ties are
common: every item not seen yet (or not within the window) scores 0, so a positive with count 0 is ranked below
*every* competing item, and one with count c below every competitor with a count ≥ c.
"""

from __future__ import annotations

import torch
from torch import nn

from melonbench.core.config import PretrainConfig
from melonbench.models.base import Recommender


class Popularity(Recommender):
    """``s(u, i) = c_i``: the number of revealed interactions with item ``i`` (the same for every user).

    Parameters
    ----------
    n_users, n_items : int
        Sizes of the dense id ranges.
    dim : int
        Unused (there are no embeddings); accepted so that every model builds with the same call.
    """

    name = "pop"
    label = "Pop"
    learnable = False

    def __init__(self, n_users: int, n_items: int, dim: int = 64) -> None:
        super().__init__(n_users, n_items, dim)
        self.register_buffer("counts", torch.zeros(n_items, dtype=torch.long))

    @classmethod
    def describe(cls, settings: dict) -> str:
        """The row label of a run, from its stored pre-training settings (``config.pretrain`` of its manifest)."""
        return cls.label

    def observe(self, stream_items: torch.Tensor, start: int, stop: int) -> None:
        """Count the interactions at stream positions ``start .. stop - 1``, all earlier ones being counted already.

        Parameters
        ----------
        stream_items : Long[N]
            The item of every stream position (the whole stream: a windowed count reads earlier positions).
        start, stop : int
            The newly revealed positions.
        """
        self._add(stream_items[start:stop], 1)

    def _add(self, items: torch.Tensor, sign: int) -> None:
        # accumulate=True: integer sums, deterministic on CUDA as well
        self.counts.index_put_((items,), torch.full_like(items, sign), accumulate=True)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.counts[items].float()  # [B, C]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts.float().expand(users.shape[0], -1)  # [B, N]

    def user_tables(self) -> dict[str, nn.Embedding]:
        return {}

    def item_tables(self) -> dict[str, nn.Embedding]:
        return {}

    def dense_parameters(self) -> dict[str, nn.Parameter]:
        return {}


class RecentPopularity(Popularity):
    """``s(u, i)`` = the number of interactions with item ``i`` among the last ``window`` revealed ones.

    Parameters
    ----------
    window : int
        ``W``, in interactions (default 256: one online batch of the paper's size, the window measured in issue 17).
    """

    name = "recent-pop"
    label = "Recent-pop"

    def __init__(self, n_users: int, n_items: int, dim: int = 64, window: int = 256) -> None:
        super().__init__(n_users, n_items, dim)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window

    def observe(self, stream_items: torch.Tensor, start: int, stop: int) -> None:
        """Count positions ``start .. stop - 1`` in, and the positions that leave the window out.

        After the call the counts cover positions ``max(0, stop - W) .. stop - 1``; they covered
        ``max(0, start - W) .. start - 1`` before it, so positions ``max(0, start - W) .. max(0, stop - W) - 1``
        leave.
        """
        super().observe(stream_items, start, stop)
        self._add(stream_items[max(0, start - self.window) : max(0, stop - self.window)], -1)

    def hparams(self) -> dict:
        return {**super().hparams(), "window": self.window}

    @classmethod
    def describe(cls, settings: dict) -> str:
        return f"{cls.label} (W={settings.get('window', 256)})"

    @classmethod
    def config_kwargs(cls, config: PretrainConfig) -> dict:
        return {**super().config_kwargs(config), "window": config.window}
