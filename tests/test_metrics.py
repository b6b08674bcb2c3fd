"""Ranks and metrics against hand-computed values (ties and NaN included) and a brute-force loop."""

from __future__ import annotations

import pytest
import torch

from melonbench.core.errors import MelonbenchError
from melonbench.online.metrics import full_ranks, hit_rate, metrics_from_ranks, ndcg, sampled_ranks

NAN = float("nan")


def test_sampled_ranks_hand_computed() -> None:
    pos = torch.tensor([0.5, 0.5, NAN, 0.2])
    neg = torch.tensor([[0.1, 0.5, 0.9], [0.1, 0.2, 0.3], [0.0, 0.0, 0.0], [NAN, 0.1, 0.3]])
    # row 0: 0.5 ties (counts against) and 0.9 beats -> 1 + 2; row 1: nothing beats -> 1;
    # row 2: a NaN positive loses to all 3 -> 4; row 3: NaN negative counts against, 0.3 beats -> 1 + 2
    assert sampled_ranks(pos, neg).tolist() == [3, 1, 4, 3]
    assert sampled_ranks(pos, neg).dtype == torch.long


def test_full_ranks_hand_computed() -> None:
    scores = torch.tensor(
        [
            [0.3, 0.9, 0.3, 0.1, 0.8],
            [0.5, 0.1, 0.7, 0.5, NAN],
            [0.5, 0.1, 0.7, 0.5, NAN],
        ]
    )
    positives = torch.tensor([0, 3, 3])
    candidates = torch.tensor(
        [
            [True, True, True, True, True],
            [True, True, False, False, True],  # positive (3) unmarked: still ranked
            [True, True, False, True, True],  # positive marked: its own column is ignored
        ]
    )
    # row 0: items 1 (0.9), 2 (tie 0.3), 4 (0.8) count -> rank 4
    # rows 1, 2: item 0 (tie 0.5) and item 4 (NaN) count, item 2 (0.7) is not a candidate -> rank 3
    assert full_ranks(scores, positives, candidates).tolist() == [4, 3, 3]


def test_full_ranks_does_not_modify_candidates() -> None:
    candidates = torch.ones(1, 3, dtype=torch.bool)
    full_ranks(torch.zeros(1, 3), torch.tensor([1]), candidates)
    assert candidates.all()


def test_hit_rate_and_ndcg_hand_computed() -> None:
    ranks = torch.tensor([1, 2, 5, 6, 10, 11, 20, 21])
    assert hit_rate(ranks, 5).tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert hit_rate(ranks, 20).tolist() == [1, 1, 1, 1, 1, 1, 1, 0]
    # 1/log2(rank + 1): rank 2 -> 1/log2 3 = 0.63093, 5 -> 1/log2 6 = 0.38685, 10 -> 1/log2 11 = 0.28906,
    # 20 -> 1/log2 21 = 0.22767 (computed with a calculator)
    expected5 = [1.0, 0.63093, 0.38685, 0, 0, 0, 0, 0]
    expected20 = [1.0, 0.63093, 0.38685, 0.35621, 0.28906, 0.27894, 0.22767, 0]
    assert ndcg(ranks, 5).tolist() == pytest.approx(expected5, abs=1e-5)
    assert ndcg(ranks, 20).tolist() == pytest.approx(expected20, abs=1e-5)


def test_metrics_from_ranks_keys_and_values() -> None:
    ranks = torch.tensor([1, 3, 7])
    out = metrics_from_ranks(ranks, ks=(1, 5), prefix="full_")
    assert list(out) == ["full_hr@1", "full_hr@5", "full_ndcg@1", "full_ndcg@5"]
    assert out["full_hr@5"].tolist() == [1, 1, 0]
    assert out["full_ndcg@5"].tolist() == pytest.approx([1.0, 0.5, 0.0])  # 1/log2(4) = 0.5
    assert list(metrics_from_ranks(ranks)) == ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20"]


@pytest.mark.parametrize("ks", [(0,), (5, -1), (2.5,)])
def test_metrics_from_ranks_rejects_bad_cutoffs(ks: tuple) -> None:
    with pytest.raises(MelonbenchError, match="cut-offs"):
        metrics_from_ranks(torch.tensor([1]), ks=ks)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_a_python_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    # scores on a coarse grid so that ties are frequent
    scores = torch.randint(0, 5, (20, 12), generator=g).float()
    positives = torch.randint(0, 12, (20,), generator=g)
    candidates = torch.rand(20, 12, generator=g) < 0.6
    expected_full, expected_sampled = [], []
    for b in range(20):
        p = positives[b].item()
        s_pos = scores[b, p].item()
        expected_full.append(1 + sum(1 for j in range(12) if j != p and candidates[b, j] and scores[b, j] >= s_pos))
        expected_sampled.append(1 + sum(1 for j in range(12) if scores[b, j] >= scores[b, 0]))
    assert full_ranks(scores, positives, candidates).tolist() == expected_full
    # sampled protocol: column 0 as the positive, all 12 columns as negatives (it ties with itself: + 1)
    assert sampled_ranks(scores[:, 0], scores).tolist() == expected_sampled
