"""The numerical rank reported for captured learning-rate matrices."""

import torch

from melonbench.pipeline.batch_rows import numerical_rank


def test_float32_outer_products_are_rank_one_and_sums_of_two_are_rank_two():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(256, generator=g), torch.rand(4000, generator=g)
    c, d = torch.rand(256, generator=g), torch.rand(4000, generator=g)
    assert numerical_rank(torch.outer(a, b)) == 1  # float32 rounding must not count as rank
    assert numerical_rank(torch.outer(a, b) + 1e-3 * torch.outer(c, d)) == 2  # a small real component does
    assert numerical_rank(torch.zeros(3, 5)) == 0
    assert numerical_rank(torch.eye(7)) == 7
