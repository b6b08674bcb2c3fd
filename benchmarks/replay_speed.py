"""Seconds per online batch of the replay loop: Default on BPR and NCF, eval and update separately.

Configuration (issue 3): a Grocery-sized stream of 1,233 users, 1,433 items and 30,000 interactions
(80 : 2 : 18), batch 256, 99 sampled negatives + the positive, and full ranking, both protocols on in every
batch. The stream is drawn at random with power-law item popularity; the recommender is freshly initialised
(timing does not depend on how well it is trained). Prints the median over the online batches (warm-up batches
excluded; the median of three replays) and the ratio to the authors' code on the same configuration
(sampled candidates only):

    2-core CPU: BPR 0.020 s, NCF 0.099 s per batch;   H100: BPR 0.0034 s, NCF 0.0047 s.

    python benchmarks/replay_speed.py                 # CPU
    python benchmarks/replay_speed.py --device cuda   # GPU, if there is one (also Default's eager update)
"""

from __future__ import annotations

import argparse
import statistics

import torch

from melonbench.core.config import PretrainConfig
from melonbench.online.history import History
from melonbench.online.negatives import sample_negatives
from melonbench.online.replay import replay
from melonbench.online.seeding import generator
from melonbench.online.stream import Stream, batch_spans
from melonbench.online.timing import Stopwatch, device_name
from melonbench.pipeline.pretrain import init_model
from melonbench.strategies import build_strategy

REFERENCE = {("cpu", "bpr"): 0.020, ("cpu", "ncf"): 0.099, ("cuda", "bpr"): 0.0034, ("cuda", "ncf"): 0.0047}


def grocery_sized_stream(device: torch.device, n_users=1233, n_items=1433, n=30_000, seed=0) -> Stream:
    g = torch.Generator().manual_seed(seed)
    popularity = 1.0 / torch.arange(1, n_items + 1, dtype=torch.float64) ** 0.8
    users = torch.randint(0, n_users, (n,), generator=g)
    items = torch.multinomial(popularity, n, replacement=True, generator=g)
    users[:n_users] = torch.arange(n_users)
    items[:n_items] = torch.arange(n_items)
    ts = torch.arange(n, dtype=torch.long) * 3600
    return Stream(users.to(device), items.to(device), ts.to(device), n_users, n_items, int(n * 0.8), int(n * 0.82))


def measure(model_name: str, device: torch.device, warmup: int = 3, params: tuple = ()) -> tuple[float, float]:
    stream = grocery_sized_stream(device)
    history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=stream.pretrain_end)
    lo = stream.pretrain_end
    positions = torch.arange(lo, stream.n, device=device)
    negatives = sample_negatives(
        history, stream.users[lo:], stream.items[lo:], positions, 99, generator(0, "bench", device)
    )
    model = init_model(model_name, stream, PretrainConfig(), 0)
    strategy = build_strategy("default", model, params, 0)
    spans = [(i, *s) for i, s in enumerate(batch_spans(stream, ("validation", "test"), 256))]
    cold = torch.zeros(stream.n_users, dtype=torch.bool, device=device)
    outcomes = list(
        replay(
            model,
            strategy,
            stream,
            history,
            spans,
            negatives,
            lo,
            generator(0, "train", device),
            cold,
            stopwatch=Stopwatch(device),
        )
    )
    timed = outcomes[warmup:]
    return statistics.median(o.eval_s for o in timed), statistics.median(o.update_s for o in timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="bpr,ncf")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    print(f"{'model':6} {'optimiser':10} {'eval s':>9} {'update s':>9} {'total s':>9} {'reference':>9} {'ratio':>6}")
    models = args.models.split(",")
    measure(models[0], device)  # throw-away: the first replay in a process pays one-time costs
    optimisers = [("Adam", ()), ("lazy Adam", (("sparse", "true"),))]
    if device.type == "cuda":  # on CUDA "Adam" is replayed as a CUDA graph (docs/melon.md); beside it, eager
        optimisers.append(("Adam eager", (("cuda_graphs", "false"),)))
    for model in models:
        for opt, params in optimisers:
            runs = [measure(model, device, params=params) for _ in range(3)]
            ev = statistics.median(r[0] for r in runs)
            up = statistics.median(r[1] for r in runs)
            ref = REFERENCE.get((device.type, model))
            ratio = f"{(ev + up) / ref:6.2f}" if ref else "     -"
            print(f"{model:6} {opt:10} {ev:9.4f} {up:9.4f} {ev + up:9.4f} {ref if ref else '-':>9} {ratio}")


if __name__ == "__main__":
    main()
