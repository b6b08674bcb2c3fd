"""Ranking metrics: pessimistic ranks under the sampled and full-ranking protocols, then HR@k and NDCG@k.

Pure functions on device tensors, one per metric; nothing here synchronises with the host. A rank is 1-based:
1 + the number of competing items scored at least as high as the positive, so ties count against the positive.
A NaN score never helps the positive: a NaN positive loses to every competitor, a NaN competitor beats the
positive (every comparison involving NaN is counted as a loss).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from melonbench.core.errors import MelonbenchError


def _loses_to(competitors: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """True where a competitor scores >= the positive, or either score is NaN (``not (c < p)``)."""
    return ~(competitors < positive)


def sampled_ranks(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Rank of each positive among its sampled negatives.

    Parameters
    ----------
    pos_scores : Float[B]
        Score of each positive.
    neg_scores : Float[B, C]
        Scores of its ``C`` sampled negatives.

    Returns
    -------
    Long[B]
        ``1 + #(neg >= pos)``, in ``1 .. C + 1``.
    """
    return 1 + _loses_to(neg_scores, pos_scores.unsqueeze(1)).sum(dim=1)


def full_ranks(scores: torch.Tensor, positives: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Rank of each positive against a set of candidate items scored over the whole catalogue.

    Parameters
    ----------
    scores : Float[B, N]
        Scores of every item for each interaction's user.
    positives : Long[B]
        The positive item of each interaction.
    candidates : Bool[B, N]
        The items the positive competes against. The positive's own column is ignored: it is ranked whether
        or not it is marked.

    Returns
    -------
    Long[B]
        ``1 + #(candidate items other than the positive with score >= the positive's)``.
    """
    pos_scores = scores.gather(1, positives.unsqueeze(1))  # [B, 1]
    competitors = candidates.scatter(1, positives.unsqueeze(1), False)
    return 1 + (_loses_to(scores, pos_scores) & competitors).sum(dim=1)


def hit_rate(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """HR@k per interaction: 1.0 if ``rank <= k`` else 0.0 (Float, same shape as ``ranks``)."""
    return (ranks <= k).float()


def ndcg(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """NDCG@k per interaction with one relevant item: ``1 / log2(rank + 1)`` if ``rank <= k`` else 0.0."""
    gain = 1.0 / torch.log2(ranks.float() + 1.0)
    return torch.where(ranks <= k, gain, 0.0)


def metrics_from_ranks(
    ranks: torch.Tensor, ks: Iterable[int] = (5, 10, 20), prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Every HR@k and NDCG@k per interaction.

    Parameters
    ----------
    ranks : Long[B]
        1-based ranks.
    ks : Iterable[int]
        Cut-offs, each >= 1.
    prefix : str
        Prepended to every key (e.g. ``"full_"``).

    Returns
    -------
    dict[str, Float[B]]
        ``{prefix}hr@{k}`` for every k, then ``{prefix}ndcg@{k}`` for every k, in the order of ``ks``.

    Raises
    ------
    MelonbenchError
        For a cut-off below 1.
    """
    ks = tuple(ks)
    bad = [k for k in ks if int(k) != k or k < 1]
    if bad:
        raise MelonbenchError(f"Metric cut-offs must be integers >= 1, got {bad}")
    out = {f"{prefix}hr@{k}": hit_rate(ranks, k) for k in ks}
    out.update({f"{prefix}ndcg@{k}": ndcg(ranks, k) for k in ks})
    return out
