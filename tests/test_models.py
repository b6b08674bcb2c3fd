"""Recommenders: hand-computed scores, an independent NeuMF forward, score/score_all agreement, the contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import melonbench.models.ncf as ncf_module
from melonbench.core.errors import UnknownNameError
from melonbench.models import BPR, MODELS, NCF, Popularity, RecentPopularity, Recommender, build_model

N_USERS, N_ITEMS = 9, 23
LEARNED = sorted(name for name, cls in MODELS.items() if cls.learnable)


def _model(name: str) -> Recommender:
    torch.manual_seed(0)
    if name == "ncf":
        return build_model(name, N_USERS, N_ITEMS, dim=8, layers=(16, 8, 8, 8))
    model = build_model(name, N_USERS, N_ITEMS, dim=8)
    if not model.learnable:  # counts that differ between items, so that scores do too
        model.observe(torch.randint(0, N_ITEMS, (100,)), 0, 100)
    return model


def test_registry_and_unknown_names() -> None:
    assert MODELS == {"bpr": BPR, "ncf": NCF, "pop": Popularity, "recent-pop": RecentPopularity}
    assert LEARNED == ["bpr", "ncf"]
    assert all(cls.name == key for key, cls in MODELS.items())
    with pytest.raises(UnknownNameError, match=r"Unknown model 'ncff'. Did you mean 'ncf'\? Available: bpr, ncf"):
        build_model("ncff", 3, 3)


def test_bpr_scores_by_hand() -> None:
    model = BPR(2, 3, dim=2)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 2.0], [0.5, -1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[3.0, 0.0], [1.0, 1.0], [-2.0, 4.0]]))
        model.item_bias.weight.copy_(torch.tensor([[0.0], [1.0], [-1.0]]))
    # user 0: items 2, 1 -> (-2 + 8) - 1 = 5 and (1 + 2) + 1 = 4
    # user 1: items 0, 2 -> 1.5 + 0 = 1.5 and (-1 - 4) - 1 = -6
    scores = model.score(torch.tensor([0, 1]), torch.tensor([[2, 1], [0, 2]]))
    assert scores.flatten().tolist() == pytest.approx([5.0, 4.0, 1.5, -6.0])
    # user 1, item 1: (0.5 - 1) + 1 = 0.5
    assert model.score_all(torch.tensor([1])).flatten().tolist() == pytest.approx([1.5, 0.5, -6.0])
    # BPR loss softplus(s_neg - s_pos): (pos 2, neg 1) -> log(1 + e^-1); (pos 1, neg 2) -> log(1 + e^1)
    loss = model.bpr_loss(torch.tensor([0, 0]), torch.tensor([2, 1]), torch.tensor([1, 2]))
    assert loss.tolist() == pytest.approx([math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))], rel=1e-6)


def test_ncf_matches_a_plain_neumf_forward() -> None:
    model = _model("ncf")
    users, items = torch.tensor([0, 4, 8]), torch.tensor([[1, 2, 22], [0, 0, 5], [7, 3, 11]])
    # the textbook form: concatenate the MLP embeddings, run the layers, concatenate with GMF, fuse, add the item bias
    u, i = users.unsqueeze(1).expand_as(items), items
    h = torch.cat((model.user_mlp(u), model.item_mlp(i)), dim=-1)
    for layer in model.mlp:
        h = F.relu(layer(h))
    fused = model.fusion(torch.cat((model.user_gmf(u) * model.item_gmf(i), h), dim=-1)).squeeze(-1)
    expected = fused + model.item_bias(i).squeeze(-1)
    torch.testing.assert_close(model.score(users, items), expected, rtol=1e-5, atol=1e-6)


def test_ncf_default_shape_is_the_papers() -> None:
    model = NCF(5, 7)
    assert [(layer.in_features, layer.out_features) for layer in model.mlp] == [(128, 64), (64, 64), (64, 64), (64, 64)]
    assert (model.fusion.in_features, model.fusion.out_features) == (128, 1)
    assert model.user_gmf.weight.shape == (5, 64) and model.item_mlp.weight.shape == (7, 64)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("budget", [1 << 26, 40])  # one chunk, and many uneven chunks of items
def test_score_all_agrees_with_score(name: str, budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ncf_module, "score_all_budget", lambda device: budget)
    model = _model(name)
    users = torch.tensor([0, 3, 3, 8])
    full = model.score_all(users)
    assert full.shape == (4, N_ITEMS)
    torch.testing.assert_close(full, model.score(users, torch.arange(N_ITEMS).expand(4, -1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parameter_groups_partition_the_model(name: str) -> None:
    model = _model(name)
    groups = [*model.user_tables().values(), *model.item_tables().values()]
    assert all(t.num_embeddings == N_USERS for t in model.user_tables().values())
    assert all(t.num_embeddings == N_ITEMS for t in model.item_tables().values())
    ids = [id(t.weight) for t in groups] + [id(p) for p in model.dense_parameters().values()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    for key, table in {**model.user_tables(), **model.item_tables()}.items():
        assert getattr(model, key) is table
    named = dict(model.named_parameters())
    assert all(named[key] is p for key, p in model.dense_parameters().items())
    assert (len(model.dense_parameters()) == 0) == (name != "ncf")
    assert (len(ids) == 0) == (not model.learnable)


@pytest.mark.parametrize("name", LEARNED)
def test_embeddings_start_normal_with_std_001(name: str) -> None:
    torch.manual_seed(1)
    model = build_model(name, 3000, 3000)
    for table in [*model.user_tables().values(), *model.item_tables().values()]:
        w = table.weight.detach()
        # >= 3,000 draws per table: the sample std is within ~1.3% (sd) of 0.01 and the mean within ~0.0002 (sd)
        assert abs(w.std().item() - 0.01) < 0.001 and abs(w.mean().item()) < 0.002


@pytest.mark.parametrize("name", LEARNED)
def test_loss_is_stable_and_touches_only_its_rows(name: str) -> None:
    model = _model(name)
    with torch.no_grad():
        model.item_bias.weight[3] = 500.0  # a huge score gap: softplus stays finite, no inf/NaN
        model.item_bias.weight[4] = -500.0
    loss = model.bpr_loss(torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([4, 3]))
    assert loss[0].item() == pytest.approx(0.0, abs=1e-6) and loss[1].item() == pytest.approx(1000.0, rel=1e-3)
    loss.sum().backward()
    for table in model.user_tables().values():
        touched = table.weight.grad.abs().sum(1).nonzero().flatten().tolist()
        assert set(touched) <= {1, 2}
    for table in model.item_tables().values():
        assert set(table.weight.grad.abs().sum(1).nonzero().flatten().tolist()) <= {3, 4}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_deterministic_scoring_and_rebuild_from_hparams(name: str) -> None:
    model = _model(name)
    model.train()
    users, items = torch.tensor([0, 1]), torch.tensor([[0, 1], [2, 3]])
    assert torch.equal(model.score(users, items), model.score(users, items))  # no dropout
    hp = model.hparams()
    assert hp["name"] == name and hp["n_users"] == N_USERS and hp["n_items"] == N_ITEMS
    clone = build_model(hp.pop("name"), **hp)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.score(users, items), model.score(users, items))
