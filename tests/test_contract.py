"""The contract every registered strategy meets on every model it supports (style.md, habit 5)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.models import MODELS
from melonbench.online.history import History
from melonbench.strategies import STRATEGIES, build_strategy

PAIRS = [(s, m) for s in STRATEGIES for m in MODELS if m in STRATEGIES[s].supports]
# Default is checked in both of its optimiser modes; its sparse mode claims selective updates.
CASES = [(s, m, ()) for s, m in PAIRS] + [
    ("default", m, (("sparse", "true"),)) for m in MODELS if m in STRATEGIES["default"].supports
]


def run_steps(strategy_name: str, model_name: str, params, steps: int = 3, seed: int = 0):
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = tiny_model(model_name, stream)
    strategy = build_strategy(strategy_name, model, params, seed)
    batches = online_batches(stream, history, count=steps)
    losses = []
    for batch in batches:
        losses.append(strategy.online_step(batch, history))
        history.advance(len(batch))
    return model, strategy, losses, batches, stream


@pytest.mark.parametrize(("strategy", "model", "params"), CASES)
def test_losses_are_finite_per_interaction(strategy, model, params):
    _, _, losses, batches, _ = run_steps(strategy, model, params)
    for loss, batch in zip(losses, batches):
        assert loss.shape == (len(batch),)
        assert torch.isfinite(loss).all()
        assert not loss.requires_grad


@pytest.mark.parametrize(("strategy", "model", "params"), CASES)
def test_same_seed_gives_bit_identical_parameters(strategy, model, params):
    a, *_ = run_steps(strategy, model, params)
    b, *_ = run_steps(strategy, model, params)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


@pytest.mark.parametrize(("strategy", "model", "params"), CASES)
def test_step_does_not_mutate_its_batch(strategy, model, params):
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    net = tiny_model(model, stream)
    strat = build_strategy(strategy, net, params, 0)
    batch = online_batches(stream, history, count=1)[0]
    before = {k: v.clone() for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
    strat.online_step(batch, history)
    for key, value in before.items():
        assert torch.equal(getattr(batch, key), value), key


@pytest.mark.parametrize(("strategy", "model", "params"), CASES)
def test_untouched_rows_unchanged_when_selective(strategy, model, params):
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    net = tiny_model(model, stream)
    strat = build_strategy(strategy, net, params, 0)
    if not strat.selective:
        pytest.skip(f"{strategy} does not claim selective updates")
    batch = online_batches(stream, history, count=1)[0]
    users_before = {k: t.weight.detach().clone() for k, t in net.user_tables().items()}
    items_before = {k: t.weight.detach().clone() for k, t in net.item_tables().items()}
    strat.online_step(batch, history)
    untouched_users = torch.ones(stream.n_users, dtype=torch.bool)
    untouched_users[batch.users] = False
    untouched_items = torch.ones(stream.n_items, dtype=torch.bool)
    untouched_items[torch.cat([batch.items, batch.negatives])] = False
    assert untouched_users.any() and untouched_items.any()  # the check below must look at something
    for k, table in net.user_tables().items():
        assert torch.equal(table.weight[untouched_users], users_before[k][untouched_users]), k
    for k, table in net.item_tables().items():
        assert torch.equal(table.weight[untouched_items], items_before[k][untouched_items]), k


@pytest.mark.parametrize(("strategy", "model", "params"), CASES)
def test_state_round_trips_through_save_and_load(strategy, model, params):
    # Run 2 steps, save model + strategy state through torch.save(weights_only), restore into fresh objects,
    # then take step 3 on both: the parameters must be bit-identical.
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    batches = online_batches(stream, history, count=3)
    net = tiny_model(model, stream)
    strat = build_strategy(strategy, net, params, 0)
    for batch in batches[:2]:
        strat.online_step(batch, history)
        history.advance(len(batch))
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "strategy": strat.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    net2 = tiny_model(model, stream, seed=123)  # different init: everything must come from the state
    net2.load_state_dict(saved["model"])
    strat2 = build_strategy(strategy, net2, params, 0)
    strat2.load_state_dict(saved["strategy"])
    history2 = copy.deepcopy(history)
    strat.online_step(batches[2], history)
    strat2.online_step(batches[2], history2)
    for (name, pa), pb in zip(net.state_dict().items(), net2.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_every_strategy_class_is_registered():
    # Every concrete Strategy subclass defined in melonbench/strategies/ must be in the registry dict.
    import importlib
    import inspect
    import pkgutil

    import melonbench.strategies as pkg
    from melonbench.strategies.base import Strategy

    defined = set()
    for info in pkgutil.walk_packages(pkg.__path__, prefix="melonbench.strategies."):  # MeLON is a package
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Strategy) and cls.__module__ == module.__name__ and not inspect.isabstract(cls):
                defined.add(cls)
    assert defined == set(STRATEGIES.values())
    for name, cls in STRATEGIES.items():
        assert cls.name == name and cls.label and cls.supports <= set(MODELS)


META_PAIRS = [(s, m) for s, m in PAIRS if STRATEGIES[s].meta]


@pytest.mark.parametrize(("strategy", "model"), META_PAIRS)
def test_meta_pretraining_leaves_the_recommender_alone_and_its_state_round_trips(strategy, model):
    from melonbench.pipeline.meta_pretrain import train_meta

    stream = tiny_stream()
    net = tiny_model(model, stream)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    strat = build_strategy(strategy, net, (("meta_epochs", "1"),), 0)
    state = train_meta(strat, (("meta_epochs", "1"),), stream, 0, batch_size=64)
    for key, value in net.state_dict().items():  # meta pre-training works on a copy
        assert torch.equal(value, before[key]), key
    fresh = build_strategy(strategy, net, (("meta_epochs", "1"),), 0)
    fresh.load_meta_state_dict(state)
    again = fresh.meta_state_dict()
    flat_a, flat_b = torch.utils._pytree.tree_flatten(state)[0], torch.utils._pytree.tree_flatten(again)[0]
    assert len(flat_a) == len(flat_b) > 0
    for a, b in zip(flat_a, flat_b):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
