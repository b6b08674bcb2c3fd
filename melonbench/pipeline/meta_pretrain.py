"""Offline pre-training of a strategy's meta-model, cached by content hash.

Following the paper's Algorithm 1 (appendix), the meta-model learns by running the online procedure (look-ahead,
meta step, update) over the pre-training part, starting from the shared pre-trained recommender. We run it on a
**copy** of that recommender and keep only the meta-model: every strategy then starts its online replay from
the identical recommender checkpoint (design.md, Protocol).

Deviation, stated: the paper samples the mini-batches at random; we pass over the pre-training part in time order
(batches of the online size), because a random mini-batch has no well-defined "previous interaction of each
user and item" (B_t^last), which the look-ahead needs. ``meta_epochs`` passes are made, each from the start.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import torch

from melonbench import __version__
from melonbench.core.config import config_hash, to_jsonable
from melonbench.core.errors import CheckpointError
from melonbench.online.history import History
from melonbench.online.negatives import sample_training_negatives
from melonbench.online.seeding import generator
from melonbench.online.stream import Batch, Stream, batch_spans
from melonbench.store.atomic import atomic_write_bytes
from melonbench.store.paths import checkpoints_dir
from melonbench.strategies import build_strategy
from melonbench.strategies.base import Strategy

MetaCallback = Callable[[int, int, int], None]  # (epoch, batches done, batches per epoch)


def meta_key(strategy: Strategy, checkpoint_key: str, seed: int, batch_size: int) -> str:
    return config_hash(
        "meta", strategy.name, to_jsonable(strategy.config), checkpoint_key, seed, batch_size, __version__
    )


def train_meta(
    strategy: Strategy,
    params: tuple[tuple[str, str], ...],
    stream: Stream,
    seed: int,
    batch_size: int,
    on_batch: MetaCallback | None = None,
) -> dict:
    """Run ``pretrain_step`` over the pre-training part on a copy of the recommender; return the meta state."""
    trainer = build_strategy(strategy.name, copy.deepcopy(strategy.model), params, seed)
    gen = generator(seed, "meta-pretrain", stream.users.device)
    epochs = int(getattr(strategy.config, "meta_epochs", 1))
    spans = list(batch_spans(stream, ("pretrain",), batch_size))
    exists_at = stream.pretrain_end
    for epoch in range(1, epochs + 1):
        history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=0)
        for index, (split, lo, hi) in enumerate(spans):
            positions = torch.arange(lo, hi, device=stream.users.device)
            users, items = stream.users[lo:hi], stream.items[lo:hi]
            negatives = sample_training_negatives(
                history, users, items, positions, gen, exist_positions=torch.full_like(positions, exists_at)
            )
            trainer.pretrain_step(Batch(index, split, positions, users, items, stream.ts[lo:hi], negatives), history)
            history.advance(hi - lo)
            if on_batch is not None:
                on_batch(epoch, index + 1, len(spans))
    return trainer.meta_state_dict()


def load_or_train_meta(
    strategy: Strategy,
    params: tuple[tuple[str, str], ...],
    stream: Stream,
    checkpoint_key: str,
    seed: int,
    batch_size: int,
    on_batch: MetaCallback | None = None,
) -> str:
    """Give ``strategy`` its pre-trained meta-model (cached), and return the cache key."""
    key = meta_key(strategy, checkpoint_key, seed, batch_size)
    path = checkpoints_dir() / f"meta-{strategy.name}-{key}.pt"
    if path.is_file():
        try:
            state = torch.load(path, map_location=stream.users.device, weights_only=True)
            strategy.load_meta_state_dict(state)
        except Exception as exc:
            raise CheckpointError(
                f"meta-model checkpoint {path} is corrupt or incompatible ({type(exc).__name__}); delete it"
            ) from None
        return key
    state = train_meta(strategy, params, stream, seed, batch_size, on_batch)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    strategy.load_meta_state_dict(state)
    return key
