"""MeLON's update on the smallest input we found that shows why the paper's summed steps diverge on real data.

On Amazon Grocery (BPR), meta pre-training drives MeLON's learning-rate gates to their ceiling, σ ≈ 1, within about
60 batches for every seed (docs/melon.md, "Stability on real data"). With the gates there, Eq. 5 read literally (a
parameter's step is the *sum* of the steps of every interaction that touches it, ``variant=paper``) is plain
gradient descent with rate 1 on each row's summed gradient; a row that k interactions of a batch touch moves k
gradient steps at once, and the user and item rows then feed each other's growth. Averaging the steps over those
interactions (``paper-mean``, the default, the released code's aggregation) keeps a row's step the size of one.

The input: 40 users, 30 items, dimension 8, batches of 64 interactions, half of them on one item; the gates held
at σ(30) ≈ 1 by their bias (``lr_bias_low = lr_bias_high = 30``); the rest of φ as initialised.

On NCF averaging is not enough (docs/melon.md, "A minimal example on NCF"): with every gate at 1 the averaged update
is gradient descent with rate 1 on the batch's mean gradient, and through two MLP layers a weight's gradient grows
with the other layers' weights, so each step raises the next one. The same input, with weights drawn from N(0, 1)
and an MLP of two layers of 8, diverges within five batches for MeLON, MeLON-I and MeLON-P alike (the state both
traced NCF divergences of meta pre-training on real data reached first), and stays bounded with the gates as
initialised.
"""

from __future__ import annotations

import math

import pytest
import torch

from melonbench.models import build_model
from melonbench.online.history import History
from melonbench.online.negatives import sample_negatives
from melonbench.online.stream import Batch, Stream
from melonbench.strategies import build_strategy

N_USERS, N_ITEMS, SIZE, BATCHES = 40, 30, 64, 20


def popular_item_stream(seed: int = 0) -> Stream:
    """Pre-training: every user and item once, then random pairs; online: half the interactions on item 0."""
    g = torch.Generator().manual_seed(seed)
    n_pre = 2 * (N_USERS + N_ITEMS)
    pre_users = torch.cat([torch.arange(N_USERS), torch.randint(0, N_USERS, (n_pre - N_USERS,), generator=g)])
    pre_items = torch.cat([torch.arange(N_ITEMS), torch.randint(0, N_ITEMS, (n_pre - N_ITEMS,), generator=g)])
    n_online = SIZE * BATCHES
    online_users = torch.randint(0, N_USERS, (n_online,), generator=g)
    other = torch.randint(1, N_ITEMS, (n_online,), generator=g)
    online_items = torch.where(torch.rand(n_online, generator=g) < 0.5, 0, other)
    users, items = torch.cat([pre_users, online_users]), torch.cat([pre_items, online_items])
    return Stream(users, items, torch.arange(users.shape[0]) * 60, N_USERS, N_ITEMS, n_pre, n_pre)


CEILING = (("lr_bias_low", "30"), ("lr_bias_high", "30"))


def replay(model, strategy: str, settings: tuple[tuple[str, str], ...], batches: int = BATCHES) -> list:
    """Replay ``batches`` online batches of :func:`popular_item_stream` through ``strategy`` (trained on ``model``);
    per batch, a detached copy of the model's parameters by name after its update."""
    stream = popular_item_stream()
    updater = build_strategy(strategy, model, settings, 0)
    history = History(stream.users, stream.items, N_USERS, N_ITEMS, cursor=stream.pretrain_end)
    negatives_gen = torch.Generator().manual_seed(0)
    after = []
    for index in range(batches):
        lo = stream.pretrain_end + index * SIZE
        positions = torch.arange(lo, lo + SIZE)
        users, items = stream.users[lo : lo + SIZE], stream.items[lo : lo + SIZE]
        negatives = sample_negatives(history, users, items, positions, 1, negatives_gen)[:, 0]
        batch = Batch(index, "test", positions, users, items, stream.ts[lo : lo + SIZE], negatives)
        updater.online_step(batch, history)
        history.advance(SIZE)
        after.append({name: p.detach().clone() for name, p in model.named_parameters()})
    return after


def initialised(model, scale: float):
    """``model`` with every parameter drawn from N(0, scale²) by a fixed generator."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def largest_row_norms(settings: tuple[tuple[str, str], ...]) -> list[float]:
    """The largest embedding-row norm after each online batch of MeLON-BPR with its gates at the ceiling."""
    model = initialised(build_model("bpr", N_USERS, N_ITEMS, dim=8), 0.1)
    rows = [torch.cat([p["user_emb.weight"], p["item_emb.weight"]]) for p in replay(model, "melon", settings + CEILING)]
    return [float(r.norm(dim=1).max()) for r in rows]


def largest_dense_weights(
    strategy: str, settings: tuple[tuple[str, str], ...], layers: tuple[int, ...] = (8, 8), batches: int = 5
) -> list[float]:
    """The largest |weight| of NCF's MLP and fusion layer after each online batch (NaN once non-finite)."""
    model = initialised(build_model("ncf", N_USERS, N_ITEMS, dim=8, layers=layers), 1.0)
    largest = []
    for params in replay(model, strategy, settings, batches=batches):
        dense = torch.cat([p.flatten() for name, p in params.items() if name.startswith(("mlp.", "fusion."))])
        largest.append(float(dense.abs().max()) if bool(dense.isfinite().all()) else math.nan)
    return largest


def test_the_paper_variant_diverges_once_the_gates_reach_their_ceiling():
    # Measured: 1.18 after the first batch, 24.5 after 16, 2.5e3 after 20; growth the mean does not show (below).
    norms = largest_row_norms((("variant", "paper"),))
    assert norms[-1] > 500 * norms[0]


def test_the_default_melon_averages_and_stays_bounded_on_the_same_input():
    # Measured with paper-mean: 0.51 after the first batch, 1.58 after 20 (BPR rows still grow slowly under the
    # pairwise loss without weight decay: that is BPR's, not MeLON's).
    default = largest_row_norms(())
    assert default == largest_row_norms((("variant", "paper-mean"),))  # the default is paper-mean
    assert max(default) < 5 * default[0] and max(default) < 3.0


@pytest.mark.parametrize(
    ("strategy", "variant"),
    [("melon", "paper-mean"), ("melon-i", "paper-mean"), ("melon-p", "paper-mean"), ("melon", "reference")],
)
def test_on_ncf_the_averaged_update_diverges_too_once_the_gates_reach_their_ceiling(strategy, variant):
    # Measured (melon): 5.42, 24.0, 572, 3.3e5, 5.3e3 (MeLON-P: 2.4e9 at the fifth), from 3.22 with the gates as
    # initialised (below). The released code's networks (variant=reference) grow the same way (5.42, 18.6,
    # 362, 8.5e4, 2.5e11): with every gate at 1 the update no longer depends on the networks that set the gates.
    largest = largest_dense_weights(strategy, (("variant", variant), *CEILING))
    assert largest[1] > 3 * largest[0]
    assert max(math.inf if math.isnan(w) else w for w in largest) > 1e4


def test_on_ncf_with_one_mlp_layer_the_ceiling_does_not_diverge():
    # Measured: 3.07, 2.93, 2.87, 2.97, 3.84, 3.42, 2.81, 2.65, 2.61, 2.47. Through one layer a weight's gradient
    # does not grow with another layer's weights: the growth above needs the second layer.
    largest = largest_dense_weights("melon", CEILING, layers=(8,), batches=10)
    assert all(math.isfinite(w) for w in largest)
    assert max(largest) < 5.0


@pytest.mark.parametrize("strategy", ["melon", "melon-i", "melon-p"])
def test_on_ncf_the_same_input_stays_bounded_with_the_gates_as_initialised(strategy):
    # Measured (melon): 3.22 after the first batch, 3.11 after the fifth (the forget gates ≈ 0.99 shrink a little).
    largest = largest_dense_weights(strategy, ())
    assert all(math.isfinite(w) for w in largest)
    assert max(largest) < 3.5
