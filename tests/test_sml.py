"""SML's defining properties: the transfer CNN as specified, only touched rows change, f_Θ learns on the next batch;
and the CLI refuses SML with NCF before any work."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from tiny import online_batches, tiny_model, tiny_stream
from typer.testing import CliRunner

from melonbench.cli import app
from melonbench.online.history import History
from melonbench.pipeline import experiment
from melonbench.strategies import build_strategy
from melonbench.strategies.sml import TransferNet


def transfer_by_hand(net: TransferNet, prev: torch.Tensor, fitted: torch.Tensor) -> torch.Tensor:
    """The spec's CNN written with explicit sums (no conv layers): one row at a time."""
    out = []
    for w_prev, w_hat in zip(prev, fitted, strict=True):
        image = torch.stack([w_prev, w_hat, w_prev * w_hat / w_prev.norm()])  # [3, D]
        k1, b1 = net.conv1.weight[:, 0, :, 0], net.conv1.bias  # [10, 3], [10]: a 3×1 kernel slides along D
        a1 = F.gelu(torch.stack([(k1[c].unsqueeze(1) * image).sum(0) + b1[c] for c in range(10)]))  # [10, D]
        k2, b2 = net.conv2.weight[:, :, 0, 0], net.conv2.bias  # [5, 10], [5]: 1×1 mixes channels per column
        a2 = F.gelu(torch.stack([(k2[c].unsqueeze(1) * a1).sum(0) + b2[c] for c in range(5)]))  # [5, D]
        flat = a2.reshape(-1)  # channel-major, 5D
        out.append(net.fc2.weight @ F.gelu(net.fc1.weight @ flat + net.fc1.bias) + net.fc2.bias)
    return torch.stack(out)


def test_transfer_network_has_the_specified_shape_and_maths():
    torch.manual_seed(0)
    dim = 8
    net = TransferNet(dim, 512)
    # parameters: conv1 10·3 + 10 = 40; conv2 5·10 + 5 = 55; fc1 40·512 + 512 = 20992; fc2 512·8 + 8 = 4104
    assert sum(p.numel() for p in net.parameters()) == 40 + 55 + 20992 + 4104
    prev, fitted = torch.randn(5, dim), torch.randn(5, dim)
    out = net(prev, fitted)
    assert out.shape == (5, dim)  # the embedding shape
    torch.testing.assert_close(out, transfer_by_hand(net, prev, fitted), rtol=1e-5, atol=1e-6)


def setup():
    stream = tiny_stream()
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    batches = online_batches(stream, history, count=2)
    model = tiny_model("bpr", stream)
    return stream, history, batches, model, build_strategy("sml", model, (), 0)


def test_only_touched_rows_change_and_they_become_the_transfer_output():
    stream, history, (b0, _), model, strategy = setup()
    before = copy.deepcopy(model.state_dict())
    nets_before = copy.deepcopy(strategy.nets.state_dict())
    strategy.online_step(b0, history)
    users = torch.unique(b0.users)
    items = torch.unique(torch.cat([b0.items, b0.negatives]))
    for name, ids, n in (("user", users, stream.n_users), ("item", items, stream.n_items)):
        untouched = torch.ones(n, dtype=torch.bool)
        untouched[ids] = False
        for table in ("emb", "bias") if name == "item" else ("emb",):  # no user bias
            key = f"{name}_{table}.weight"
            assert torch.equal(model.state_dict()[key][untouched], before[key][untouched]), key
            assert (model.state_dict()[key][ids] != before[key][ids]).all(), key
        # the touched rows are exactly f_Θ(W_{t−1}, ŵ_t), with W_{t−1} the rows before the step
        kept = strategy.previous[f"{name}_emb.weight"]
        assert torch.equal(kept["rows"], ids) and torch.equal(kept["previous"], before[f"{name}_emb.weight"][ids])
        net = strategy.nets[f"{name}_emb_weight"]
        torch.testing.assert_close(
            model.state_dict()[f"{name}_emb.weight"][ids],
            transfer_by_hand(net, kept["previous"], kept["fitted"]),
            rtol=1e-5,
            atol=1e-6,
        )
    # step (1) fits ŵ_t through a frozen f_Θ, and step (3) has no previous batch yet: Θ is unchanged
    for key, value in strategy.nets.state_dict().items():
        assert torch.equal(value, nets_before[key]), key


def test_transfer_network_trains_on_the_next_batch_with_the_kept_rows():
    _, history, (b0, b1), model, strategy = setup()
    strategy.online_step(b0, history)
    history.advance(len(b0))
    kept = {name: {k: v.clone() for k, v in p.items()} for name, p in strategy.previous.items()}
    # Expected Θ after step (3), computed separately: one Adam step (lr 1e-3, wd 1e-4) on the loss of b1 under the
    # model whose previous rows are f_Θ(W_{t−1}, ŵ_t); a twin network and optimiser do it here.
    nets = copy.deepcopy(strategy.nets)
    tables = {name: getattr(model, name.split(".")[0]).weight.detach() for name in kept}
    params = {
        name: tables[name].index_copy(0, p["rows"], nets[name.replace(".", "_")](p["previous"], p["fitted"]))
        for name, p in kept.items()
    }
    loss = torch.func.functional_call(model, params, (b1.users, b1.items, b1.negatives)).mean()
    optimizer = torch.optim.Adam(nets.parameters(), lr=1e-3, weight_decay=1e-4)
    loss.backward()
    optimizer.step()
    theta_before = [p.detach().clone() for p in strategy.nets.parameters()]
    strategy.online_step(b1, history)
    # Adam's first step moves each weight by about lr = 1e-3. The strategy leaves out the kept rows b1 does not read
    # (their terms in the gradient are exact zeros) and uses the fused Adam kernel: only the rounding changes,
    # measured ≤ 1.2e-7, so a tolerance of 0.1 % of the step.
    for key, value in strategy.nets.state_dict().items():
        torch.testing.assert_close(value, nets.state_dict()[key], rtol=0, atol=1e-6)
    # Θ did learn
    assert all(not torch.equal(a, b) for a, b in zip(strategy.nets.parameters(), theta_before, strict=True))
    # the kept rows are now those of b1
    assert torch.equal(strategy.previous["user_emb.weight"]["rows"], torch.unique(b1.users))


def test_cli_refuses_sml_with_ncf_before_any_work(monkeypatch, melonbench_home):
    calls = []
    monkeypatch.setattr(experiment, "run_experiment", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(experiment, "load_dataset", lambda *a, **k: calls.append(a))
    result = CliRunner().invoke(app, ["run", "--strategy", "sml", "--model", "ncf"])
    assert result.exit_code != 0
    message = str(result.exception)
    assert "strategy 'sml' does not support model 'ncf' (it supports: bpr)" in message
    assert "only maps embedding rows" in message and "N/A" in message
    assert calls == []
    assert list(melonbench_home.iterdir()) == []  # nothing prepared, pre-trained or written
