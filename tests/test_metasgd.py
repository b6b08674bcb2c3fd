"""MetaSGD: the step is α ⊙ g, the meta-gradient of α is −g_last ⊙ g_meta, rank-1 learning rates."""

from __future__ import annotations

import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.core.errors import MelonbenchError
from melonbench.online.history import History
from melonbench.online.seeding import generator
from melonbench.strategies import build_strategy
from melonbench.strategies.mwnet import lookahead_batch


def bpr_mean_gradient(p: dict[str, torch.Tensor], users, pos, neg) -> dict[str, torch.Tensor]:
    """∇ of (1/n) Σ softplus(s_j − s_i) for BPR, by hand, one interaction at a time (no autograd).

    With c = σ(s_j − s_i): ∂/∂e_u = c (e_j − e_i), ∂/∂e_i = −c e_u, ∂/∂e_j = c e_u, ∂/∂b_i = −c, ∂/∂b_j = c.
    """
    eu, ei, bi = p["user_emb.weight"], p["item_emb.weight"], p["item_bias.weight"]
    grad = {k: torch.zeros_like(v) for k, v in p.items()}
    n = users.shape[0]
    for u, i, j in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        c = torch.sigmoid(eu[u] @ ei[j] + bi[j, 0] - eu[u] @ ei[i] - bi[i, 0])
        grad["user_emb.weight"][u] += c * (ei[j] - ei[i]) / n
        grad["item_emb.weight"][i] -= c * eu[u] / n
        grad["item_emb.weight"][j] += c * eu[u] / n
        grad["item_bias.weight"][i, 0] -= c / n
        grad["item_bias.weight"][j, 0] += c / n
    return grad


def setup(model_name: str = "bpr", params=()):
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = tiny_model(model_name, stream).double()  # float64: α takes the parameters' dtype
    strat = build_strategy("metasgd", model, params, 0)
    return history, model, strat, online_batches(stream, history, count=2)


def test_effective_step_is_alpha_times_gradient_and_alpha_learns_from_the_lookahead():
    history, model, strat, batches = setup()
    theta0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    alpha0 = {k: a.detach().clone() for k, a in strat.alpha.items()}
    assert all(((a >= 0.005) & (a <= 0.1)).all() for a in alpha0.values())  # Li et al.'s U[0.005, 0.1]
    batch = batches[0]
    users, items, negs = lookahead_batch(history, batch, generator(0, "metasgd-lookahead-negatives"))
    strat.online_step(batch, history)

    # meta step: θ' = θ − α0 ⊙ g_last, and ∂L(B_t; θ')/∂α = −g_last ⊙ ∇L(B_t; θ')
    g_last = bpr_mean_gradient(theta0, users, items, negs)
    ahead = {k: theta0[k] - alpha0[k] * g_last[k] for k in theta0}
    g_meta = bpr_mean_gradient(ahead, batch.users, batch.items, batch.negatives)
    for k, a in strat.alpha.items():
        torch.testing.assert_close(a.grad, -g_last[k] * g_meta[k], rtol=1e-9, atol=1e-15)
        assert (a >= 0).all()
    assert any((a != alpha0[k]).any() for k, a in strat.alpha.items())  # α did move

    # real update with the new α: θ1 = θ0 − α ⊙ g(B_t; θ0), exactly where g is zero (untouched rows)
    g = bpr_mean_gradient(theta0, batch.users, batch.items, batch.negatives)
    for k, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), theta0[k] - strat.alpha[k].detach() * g[k], rtol=1e-12, atol=1e-15)
    assert (model.user_emb.weight != theta0["user_emb.weight"]).any()


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
def test_captured_learning_rate_matrix_has_identical_rows_and_rank_one(model_name):
    history, _, strat, batches = setup(model_name)
    strat.capture_lr = True
    for batch in batches:
        strat.online_step(batch, history)
        history.advance(len(batch))
    batch = batches[-1]
    w = strat.captured_lr
    # Columns by hand: the distinct users' rows (dim 8) and the distinct items' (positive ∪ negative) rows
    # (dim 8 + item bias 1) for BPR; NCF adds a second embedding per side and its 13,641 dense weights.
    n_users = torch.unique(batch.users).numel()
    n_items = torch.unique(torch.cat([batch.items, batch.negatives])).numel()
    columns = 8 * n_users + 9 * n_items if model_name == "bpr" else 16 * n_users + 17 * n_items + 13641
    assert w.shape == (len(batch), columns)
    assert torch.equal(w, w[:1].expand_as(w))  # every row is α / n
    expected = strat.alpha["user_emb.weight" if model_name == "bpr" else "user_gmf.weight"][
        torch.unique(batch.users)[0], 0
    ] / len(batch)
    assert w[0, 0] == expected
    assert w[0].std() > 0  # after learning, α differs across coordinates
    assert int(torch.linalg.matrix_rank(w)) == 1


def test_constant_init_gives_the_named_rate():
    _, _, strat, _ = setup(params=(("alpha_low", "0.001"), ("alpha_high", "0.001")))
    assert all(torch.equal(a, torch.full_like(a, 0.001)) for a in strat.alpha.values())


def test_bad_alpha_range_is_refused():
    with pytest.raises(MelonbenchError, match="alpha_low"):
        setup(params=(("alpha_low", "0.2"),))
