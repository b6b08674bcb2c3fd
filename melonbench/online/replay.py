"""Prequential online replay: each batch is ranked by the current model first, then trained on.

Per batch B_t, in this order (Kim et al. 2022, Eq. 2; design.md, Protocol):

1. **rank** the batch's positives under the current model, with both protocols in one pass:
   *sampled* (against the persisted evaluation negatives) and *full* (against every item that exists before the
   interaction, minus the user's earlier items); ties count against the positive;
2. **record** HR@k / NDCG@k over all the batch's interactions and over its warm and cold ones
   (:mod:`melonbench.online.groups`), kept on the device; the caller copies them to the host in blocks;
3. **update**: ``strategy.online_step(batch, history)`` with fresh training negatives;
4. **advance** the history past the batch.

The loop knows nothing about any one strategy; progress bars and file writing consume what it yields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch

from melonbench.models.base import Recommender
from melonbench.online.groups import GROUPS, count_column, group_column, group_masks, group_means
from melonbench.online.history import History
from melonbench.online.metrics import full_ranks, hit_rate, ndcg, sampled_ranks
from melonbench.online.negatives import sample_training_negatives
from melonbench.online.stream import Batch, Stream
from melonbench.online.timing import Stopwatch


class Updater(Protocol):
    """What the loop needs of a strategy (:class:`~melonbench.strategies.base.Strategy` is one): the update."""

    def online_step(self, batch: Batch, history: History) -> torch.Tensor:
        """Update the recommender on ``batch`` (already ranked); return its per-interaction losses ``Float[B]``."""
        ...


@dataclasses.dataclass(frozen=True)
class BatchOutcome:
    """What one replayed batch produced.

    ``values`` is a device tensor aligned with :func:`value_names` (metrics, mean loss, cold users, the metrics of
    each warm/cold group and the groups' sizes), so the caller can stack many batches and copy them to the host at
    once.
    """

    index: int
    split: str
    start: int
    stop: int
    values: torch.Tensor
    eval_s: float
    update_s: float


def value_names(ks: Iterable[int]) -> list[str]:
    """Column names of :attr:`BatchOutcome.values`, in order."""
    metrics = [f"{proto}_{m}@{k}" for proto in ("sampled", "full") for m in ("hr", "ndcg") for k in ks]
    grouped = [group_column(metric, group) for group in GROUPS for metric in metrics]
    return [*metrics, "loss", "cold_users", *grouped, *(count_column(group) for group in GROUPS)]


@torch.no_grad()
def rank_batch(
    model: Recommender,
    history: History,
    users: torch.Tensor,
    items: torch.Tensor,
    positions: torch.Tensor,
    negatives: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pessimistic ranks of each positive under the sampled and the full protocol: ``(Long[B], Long[B])``."""
    scores = model.score(users, torch.cat([items[:, None], negatives], dim=1))  # [B, 1 + n_neg]
    sampled = sampled_ranks(scores[:, 0], scores[:, 1:])
    candidates = history.exists_mask(positions) & ~history.user_items_mask(users, positions)  # [B, n_items]
    full = full_ranks(model.score_all(users), items, candidates)
    return sampled, full


def replay(
    model: Recommender,
    strategy: Updater,
    stream: Stream,
    history: History,
    spans: Iterable[tuple[int, str, int, int]],
    eval_negatives: torch.Tensor,
    online_start: int,
    train_generator: torch.Generator,
    cold: torch.Tensor,
    *,
    ks: tuple[int, ...] = (5, 10, 20),
    paper_protocol: bool = False,
    stopwatch: Stopwatch,
) -> Iterator[BatchOutcome]:
    """Replay ``spans`` (``(index, split, start, stop)``, in time order) and yield one outcome per batch.

    Parameters
    ----------
    eval_negatives : torch.Tensor
        ``Long[n_online, n_neg]``: row ``p - online_start`` holds the negatives of stream position ``p``.
    train_generator : torch.Generator
        Draws the training negatives (independent of the evaluation negatives).
    cold : torch.Tensor
        ``Bool[n_users]``: users absent from the pre-training part.
    paper_protocol : bool
        Reuse the first evaluation negative as the training negative (the published code's setting).
    """
    for index, split, start, stop in spans:
        if history.cursor != start:
            raise RuntimeError(f"history cursor {history.cursor} is not at batch start {start}")
        positions = torch.arange(start, stop, device=stream.users.device)
        users, items = stream.users[start:stop], stream.items[start:stop]
        negatives = eval_negatives[start - online_start : stop - online_start]

        with stopwatch.section("eval"):  # 1. rank before any update
            sampled, full = rank_batch(model, history, users, items, positions, negatives)
        record = torch.stack(  # 2. record (device-side), in value_names order: [M, B]
            [metric(ranks, k) for ranks in (sampled, full) for metric in (hit_rate, ndcg) for k in ks]
        )
        # warm = the positive item (user) occurs before the batch; cold for all of a batch's interactions with it
        masks = group_masks(history.item_exists(items, start), history.user_exists(users, start))  # [G, B]
        by_group, group_sizes = group_means(record, masks)  # [G, M], [G]

        with stopwatch.section("update"):  # 3. update
            if paper_protocol:
                train_negatives = negatives[:, 0].contiguous()
            else:
                train_negatives = sample_training_negatives(history, users, items, positions, train_generator)
            batch = Batch(index, split, positions, users, items, stream.ts[start:stop], train_negatives)
            losses = strategy.online_step(batch, history)

        history.advance(stop - start)  # 4. advance
        times = stopwatch.pop()
        n_cold = cold[torch.unique(users)].sum()  # distinct users of the batch absent from pre-training
        head = torch.stack([losses.float().mean(), n_cold.float()])
        values = torch.cat([record.mean(dim=1), head, by_group.flatten(), group_sizes])
        yield BatchOutcome(index, split, start, stop, values, times.get("eval", 0.0), times.get("update", 0.0))
