"""The fixed-shape steps that CUDA graphs replay compute what the eager steps compute.

With ``cuda_graphs`` on a GPU, Default (and eALS), MWNet, MetaSGD and MeLON run each batch through a step of fixed
shapes (B_t^last padded to 2 |B_t| rows, weighted 0 on the padding) with no host synchronisation, captured once
and replayed (``melonbench.online.cuda_graph``). On the CPU the graph wrapper runs that step as it is, so switching it
on here takes the GPU's code path without the capture: the recommender, the meta-model and the losses must then
follow the eager path's, batch after batch, with the same negatives.
"""

from __future__ import annotations

import pytest
import torch
from tiny import online_batches, tiny_model, tiny_stream

from melonbench.online.cuda_graph import graphed_steps
from melonbench.online.history import History
from melonbench.online.seeding import generator
from melonbench.strategies import STRATEGIES, build_strategy
from melonbench.strategies.base import lookahead_batch, padded_lookahead_batch
from melonbench.strategies.lazy_state import DenseState

CASES = ["default", "eals", "mwnet", "metasgd", "s2meta", "sml", "melon", "melon-i", "melon-p"]


def as_on_a_gpu(strategy) -> None:
    """What a strategy built on a GPU with ``cuda_graphs`` holds beyond the enabled step: S²Meta's LSTM states
    allocated for every row up front (a CPU build keeps the lazy store)."""
    if hasattr(strategy, "lstms"):
        strategy.states = strategy._new_states(DenseState)


def meta_tensors(strategy) -> dict[str, torch.Tensor]:
    if hasattr(strategy, "phi"):
        return dict(strategy.phi.state_dict())
    if hasattr(strategy, "vnet"):
        return dict(strategy.vnet.state_dict())
    if hasattr(strategy, "alpha"):
        return {k: a.detach() for k, a in strategy.alpha.items()}
    if hasattr(strategy, "nets"):  # SML: the transfer networks
        return dict(strategy.nets.state_dict())
    if hasattr(strategy, "lstms"):  # S²Meta: the MetaLSTMs, and each touched coordinate's (h, c) in row order
        out = dict(strategy.lstms.state_dict())
        for name, state in strategy.states.items():
            saved = state.state_dict()
            rows = (saved["slot"] >= 0).nonzero().squeeze(1)
            out[f"{name}.rows"] = rows.float()
            out[f"{name}.h"], out[f"{name}.c"] = saved["h"][saved["slot"][rows]], saved["c"][saved["slot"][rows]]
        return out
    return {}


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
@pytest.mark.parametrize("name", CASES)
def test_fixed_shape_step_equals_the_eager_step(model_name, name):
    if model_name not in STRATEGIES[name].supports:
        pytest.skip(f"{name} does not support {model_name}")
    stream = tiny_stream()
    runs = []
    for graphs in (False, True):
        history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
        model = tiny_model(model_name, stream)
        strategy = build_strategy(name, model, (("cuda_graphs", str(graphs)),), 0)
        calls = []
        for step in graphed_steps(strategy):
            assert not step.enabled  # on the CPU: off whatever the setting
            if graphs:  # as on a GPU, and each call of the fixed-shape step recorded
                step.enabled = True
                step.fn = lambda *inputs, fn=step.fn, seen=calls: seen.append(inputs) or fn(*inputs)
                as_on_a_gpu(strategy)
        losses = []
        for batch in online_batches(stream, history, count=3):
            losses.append(strategy.online_step(batch, history))
            history.advance(len(batch))
        runs.append((model, strategy, losses, calls))
    (eager, eager_s, eager_losses, _), (fixed, fixed_s, fixed_losses, calls) = runs
    assert len(calls) == 3  # every batch of the second run took one fixed-shape step
    if name not in ("default", "eals", "sml"):  # the strategies that look ahead on B_t^last
        for inputs in calls:
            assert inputs[3].shape[0] == 2 * 32  # B^last at its fixed size, 2 |B_t|
            assert 0 < float(inputs[6].sum()) < 2 * 32  # with real rows and padding
    for a, b in zip(eager_losses, fixed_losses, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    for (key, a), b in zip(eager.state_dict().items(), fixed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), key
    meta = meta_tensors(eager_s)
    for key, a in meta.items():
        assert a.shape == meta_tensors(fixed_s)[key].shape, key
        # The two paths sum in different orders: SML's transfer network differs by 8.5e-7 with two CPU threads and
        # by 1.03e-6 with one (its fc2 weights after three Adam steps), rounding either way.
        assert torch.allclose(a, meta_tensors(fixed_s)[key], rtol=0, atol=2e-6), key
    if meta:  # three meta steps moved the meta-model: the comparison is not of untouched values
        fresh = meta_tensors(build_strategy(name, tiny_model(model_name, stream), (), 0))
        assert max(float((meta[k] - v).abs().max()) for k, v in fresh.items() if v.shape == meta[k].shape) > 1e-5


def test_bucketed_padding_rounds_b_last_up_and_gives_the_same_step():
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    batch = online_batches(stream, history, count=1)[0]
    m = lookahead_batch(history, batch, generator(0, "x"))[0].shape[0]
    users, _, _, valid = padded_lookahead_batch(history, batch, generator(0, "x"), bucket=8)
    assert users.shape[0] == -(-m // 8) * 8 < 2 * len(batch) and int(valid.sum()) == m
    assert padded_lookahead_batch(history, batch, generator(0, "x"), bucket=1000)[0].shape[0] == 2 * len(batch)
    tables = []
    for bucket in (0, 8):
        model = tiny_model("ncf", stream)
        strategy = build_strategy("melon", model, (("cuda_graphs", "true"), ("graph_bucket", str(bucket))), 0)
        strategy._graphed.enabled = True  # as on a GPU
        strategy.online_step(batch, history)
        tables.append(model.state_dict())
    for key, a in tables[0].items():
        assert torch.allclose(a, tables[1][key], rtol=0, atol=1e-6), key


def test_lazy_adam_and_the_reference_variant_keep_the_eager_step():
    stream = tiny_stream()
    model = tiny_model("bpr", stream)
    on = (("cuda_graphs", "true"),)
    assert not build_strategy("default", model, (*on, ("sparse", "true")), 0)._graphed.enabled
    melon = build_strategy("melon", model, (*on, ("variant", "reference")), 0)
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    melon._graphed.enabled = True  # as on a GPU: still the eager step, since BatchNorm would see the padding
    assert not melon._graphs_apply(history)


def _to_meta(obj, moved: dict, seen: dict):
    """``obj`` with every tensor it holds (recursively, through melonbench objects) on the meta device; tensors
    that are module parameters become the moved modules' own parameters (``moved``: id of old → new). ``seen``
    keeps every visited object alive, so that no id is reused while it is in use as a key."""
    if id(obj) in moved:
        return moved[id(obj)]
    if id(obj) in seen:
        return obj
    seen[id(obj)] = obj
    if isinstance(obj, torch.Tensor):
        out = obj.detach().to("meta")
        return out.requires_grad_() if obj.requires_grad and obj.is_leaf else out
    if isinstance(obj, dict):
        for key in list(obj):
            obj[key] = _to_meta(obj[key], moved, seen)
        return obj
    if isinstance(obj, list):
        obj[:] = [_to_meta(v, moved, seen) for v in obj]
        return obj
    if isinstance(obj, tuple):
        return tuple(_to_meta(v, moved, seen) for v in obj)
    if type(obj).__module__.startswith("melonbench") and hasattr(obj, "__dict__"):
        for key, value in list(vars(obj).items()):
            object.__setattr__(obj, key, _to_meta(value, moved, seen))  # frozen dataclasses too
    return obj


@pytest.mark.parametrize("model_name", ["bpr", "ncf"])
@pytest.mark.parametrize("name", CASES)
def test_fixed_shape_step_needs_no_tensor_data_on_the_host(model_name, name, monkeypatch):
    # What makes a step capturable: no host synchronisation and no data-dependent shape. Run it on the meta device,
    # whose tensors have shapes but no values: `.item()`, `bool(tensor)`, `nonzero`, `unique`, boolean masks and
    # the like raise there. The optimisers' own kernels are PyTorch's (stepped as no-ops here).
    if model_name not in STRATEGIES[name].supports:
        pytest.skip(f"{name} does not support {model_name}")
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    model = tiny_model(model_name, stream)
    strategy = build_strategy(name, model, (("cuda_graphs", "true"),), 0)
    calls = []
    for step in graphed_steps(strategy):
        step.enabled = True
        step.fn = lambda *inputs, fn=step.fn, seen=calls: seen.append((fn, inputs)) or fn(*inputs)
    as_on_a_gpu(strategy)
    for batch in online_batches(stream, history, count=2):  # real steps first: optimiser states, kept tensors
        strategy.online_step(batch, history)
        history.advance(len(batch))
    fn, inputs = calls[-1]
    modules = [model, *(v for v in vars(strategy).values() if isinstance(v, torch.nn.Module))]
    old = [dict(m.named_parameters()) for m in modules]  # kept alive: their ids must not be reused meanwhile
    moved = {}
    for params, module in zip(old, modules, strict=True):
        module.to("meta")
        moved.update({id(params[n]): p for n, p in module.named_parameters()})
    _to_meta(strategy, moved, {})
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: None)
    clip = torch.nn.utils.clip_grad_value_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_", lambda p, v, foreach=None: clip(p, v, foreach=False))
    out = fn(*(t.to("meta") for t in inputs))
    losses = out[0] if isinstance(out, tuple) else out
    assert losses.device.type == "meta" and losses.shape == (32,)
