"""eALS (new-data weighting): its step is Default's scaled by ``w_new``."""

from __future__ import annotations

import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.core.errors import MelonbenchError
from melonbench.online.history import History
from melonbench.strategies import build_strategy


def one_step(strategy: str, model_name: str, params=()):
    """Parameters before and after one online step from the same tiny model, and the strategy."""
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = tiny_model(model_name, stream)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    strat = build_strategy(strategy, model, params, 0)
    batch = online_batches(stream, history, count=1)[0]
    strat.online_step(batch, history)
    return before, dict(model.named_parameters()), batch


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
def test_step_is_w_new_times_defaults_step(model_name):
    # Adam's update lr · m̂ / (√v̂ + ε) is linear in lr, and from the same state both strategies see the same
    # gradient, so with w_new = 2.5 every coordinate of eALS's first step is 2.5 × Default's.
    before, default, _ = one_step("default", model_name)
    _, eals, _ = one_step("eals", model_name, (("w_new", "2.5"),))
    for name, p0 in before.items():
        torch.testing.assert_close(eals[name] - p0, 2.5 * (default[name] - p0), rtol=1e-4, atol=1e-9)


def test_first_step_moves_touched_coordinates_by_w_new_times_lr():
    # By hand: Adam's first step is lr · g / (|g| + ε) ≈ lr · sign(g) per coordinate, with g the gradient of the
    # mean loss plus the weight decay's λθ; so with w_new = 4 and lr = 1e-3 each touched user-embedding coordinate
    # moves by 4e-3 · |g| / (|g| + 1e-8), which is 4e-3 to within 1% wherever |g| > 1e-6.
    before, after, batch = one_step("eals", "bpr")
    model = tiny_model("bpr", tiny_stream())
    model.bpr_loss(batch.users, batch.items, batch.negatives).mean().backward()
    g = model.user_emb.weight.grad + 1e-3 * model.user_emb.weight.detach()
    rows = torch.unique(batch.users)
    moved = (after["user_emb.weight"][rows] - before["user_emb.weight"][rows]).abs()
    expected = 4e-3 * g[rows].abs() / (g[rows].abs() + 1e-8)
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=0)
    assert (expected > 0.99 * 4e-3).float().mean() > 0.9  # nearly all of them move by w_new · lr


def test_loss_scaling_multiplies_the_gradient_by_w_new():
    # scale=loss minimises w_new · mean(ℓ): its gradient (left in .grad after the step; torch's Adam adds the
    # weight decay inside step(), not to .grad) is w_new × Default's, i.e. the SGD step would be w_new × larger.
    _, default, _ = one_step("default", "bpr")
    _, eals, _ = one_step("eals", "bpr", (("w_new", "3"), ("scale", "loss")))
    assert default["item_emb.weight"].grad.abs().max() > 0  # the comparison below must look at something
    for name in default:
        torch.testing.assert_close(eals[name].grad, 3 * default[name].grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("params", "word"), [((("scale", "both"),), "scale"), ((("w_new", "0"),), "w_new")])
def test_bad_settings_are_refused_with_one_line(params, word):
    stream = tiny_stream()
    with pytest.raises(MelonbenchError, match=word):
        build_strategy("eals", tiny_model("bpr", stream), params, 0)
