"""LazyAdam equals torch.optim.Adam on the rows it updates, and leaves the others untouched."""

from __future__ import annotations

import torch
from torch import nn

from melonbench.strategies.lazy_adam import LazyAdam


def make_tables(seed: int = 0):
    torch.manual_seed(seed)
    users, items = nn.Embedding(5, 3), nn.Embedding(7, 3)
    return users, items


def loss_of(users, items, u, i):
    return ((users(u) * items(i)).sum(-1) - 1.0).pow(2).mean()


def test_matches_torch_adam_when_every_row_is_touched():
    # Reference: torch.optim.Adam with the same L2 weight decay; when every row is updated at every step the
    # per-row step counts equal the global one, so the two must agree to float rounding.
    u1, i1 = make_tables()
    u2, i2 = make_tables()
    ref = torch.optim.Adam([u1.weight, i1.weight], lr=0.01, weight_decay=1e-3)
    lazy = LazyAdam({"e": u2}, {"e": i2}, {}, lr=0.01, weight_decay=1e-3)
    u_all, i_all = torch.arange(5), torch.arange(7)
    g = torch.Generator().manual_seed(1)
    for _ in range(6):
        u = torch.randint(0, 5, (16,), generator=g)
        i = torch.randint(0, 7, (16,), generator=g)
        ref.zero_grad()
        loss_of(u1, i1, u, i).backward()
        ref.step()
        lazy.zero_grad()
        loss_of(u2, i2, u, i).backward()
        lazy.step(u_all, i_all)
    torch.testing.assert_close(u1.weight, u2.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(i1.weight, i2.weight, rtol=0, atol=1e-6)


def test_untouched_rows_stay_exactly_unchanged_and_touched_rows_take_adams_first_step():
    users, items = make_tables()
    before_u, before_i = users.weight.detach().clone(), items.weight.detach().clone()
    lazy = LazyAdam({"e": users}, {"e": items}, {}, lr=0.01, weight_decay=0.0)
    u, i = torch.tensor([1, 1, 3]), torch.tensor([0, 2, 2])
    loss_of(users, items, u, i).backward()
    lazy.step(torch.tensor([1, 3]), torch.tensor([0, 2]))
    for rows, w, b in (([0, 2, 4], users.weight, before_u), ([1, 3, 4, 5, 6], items.weight, before_i)):
        assert torch.equal(w[rows], b[rows])
    # Adam's first step moves every coordinate with a non-zero gradient by exactly lr (m̂/√v̂ = sign(g)).
    moved = (users.weight[[1, 3]] - before_u[[1, 3]]).abs()
    torch.testing.assert_close(moved, torch.full_like(moved, 0.01), rtol=0, atol=1e-6)
