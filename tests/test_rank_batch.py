"""Ranking a batch (``online.replay.rank_batch``) on a hand-built stream, ranks computed by hand.

The full-ranking candidates of an interaction at position p are the items that appeared before p, minus the user's
items before p; an item born after the batch must never count, however high the model scores it.
"""

from __future__ import annotations

import torch

from melonbench.models import build_model
from melonbench.online.history import History
from melonbench.online.replay import rank_batch


def test_full_ranks_count_only_items_born_before_each_interaction_and_not_yet_seen():
    # Stream (user, item) by position; the batch is p4, p5 (cursor 4). Item 5 is born at p4, inside the batch; item
    # 3 at p6, after it.
    #   p0 (0, 0)  p1 (1, 1)  p2 (0, 2)  p3 (1, 4) | p4 (0, 5)  p5 (1, 0) | p6 (0, 3)  p7 (1, 3)
    users = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    items = torch.tensor([0, 1, 2, 4, 5, 0, 3, 3])
    history = History(users, items, n_users=2, n_items=6, cursor=4)
    # BPR of dim 1, no item bias: s(u, i) = e_u e_i with e_u = 1, −1 and e_i = .5, .2, .3, .9, −.4, −.1:
    #   user 0 scores items 0..5 as  .5  .2  .3  .9  −.4  −.1
    #   user 1 scores items 0..5 as −.5 −.2 −.3 −.9   .4   .1
    model = build_model("bpr", 2, 6, dim=1)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[0.5], [0.2], [0.3], [0.9], [-0.4], [-0.1]]))
        model.item_bias.weight.zero_()
    positions = torch.tensor([4, 5])
    negatives = torch.tensor([[1, 4], [2, 5]])  # sampled protocol: two negatives each
    sampled, full = rank_batch(model, history, users[positions], items[positions], positions, negatives)
    # p4, user 0, positive 5 (−.1). Born before p4: 0, 1, 2, 4; user 0's items before p4: 0, 2 → competitors 1 (.2)
    # and 4 (−.4); 1 scores above → rank 2. Item 3 (.9, born at p6) and items 0 (.5) and 2 (.3) (seen) would each
    # have counted too.
    # p5, user 1, positive 0 (−.5). Born before p5: 0, 1, 2, 4, 5 (5 born at p4, earlier in the same batch); user 1's
    # items before p5: 1, 4 → competitors 2 (−.3) and 5 (.1), both above → rank 3.
    assert full.tolist() == [2, 3]
    # sampled: p4 against 1 (.2) and 4 (−.4) → 2; p5 against 2 (−.3) and 5 (.1) → 3
    assert sampled.tolist() == [2, 3]
