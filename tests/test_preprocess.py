import math

import torch

from melonbench.strategies.preprocess import prep


def test_prep_matches_the_two_branches_computed_by_hand():
    x = torch.tensor([1.0, -0.5, 1e-6, -2e-5, 0.0])
    got = prep(x)
    # |x| ≥ e^-10 ≈ 4.54e-5: (log|x|/10, sign); else (-1, e^10·x).
    expected = torch.tensor(
        [
            [0.0, 1.0],
            [math.log(0.5) / 10, -1.0],
            [-1.0, 1e-6 * math.exp(10)],
            [-1.0, -2e-5 * math.exp(10)],
            [-1.0, 0.0],
        ]
    )
    torch.testing.assert_close(got, expected)
    assert prep(torch.zeros(3, 4)).shape == (3, 4, 2)
