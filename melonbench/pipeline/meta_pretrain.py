"""Offline pre-training of a strategy's meta-model, cached by content hash.

Following the paper's Algorithm 1 (appendix), the meta-model learns by running the online procedure (look-ahead,
meta step, update) over the pre-training part, starting from the shared pre-trained recommender. We run it on a
**copy** of that recommender and keep only the meta-model: every strategy then starts its online replay from
the identical recommender checkpoint (design.md, Protocol).

Deviation, stated: the paper samples the mini-batches at random; we pass over the pre-training part in time order
(batches of the online size), because a random mini-batch has no well-defined "previous interaction of each
user and item" (B_t^last), which the look-ahead needs. ``meta_epochs`` passes are made, each from the start of the
stream **and from the pre-trained recommender**: online, the meta-model always updates that checkpoint, so each pass
simulates exactly that; only the meta state (the meta-model and its optimiser) carries over. (Until issue 16 the
passes went on updating one copy, which by the third pass had drifted far from the checkpoint: MeLON's outcome over
seeds split between rates that opened and rates that stayed near zero, and longer meta pre-training diverged; see
docs/melon.md, "Stability on real data".)

Negatives follow the online replay's rule, so that the meta-model learns on what it will see online: each batch's
training negative for the interaction at position p is drawn among the items that appeared before p, minus the
positive and the user's items before p (``online.replay``), and the strategy draws its look-ahead negatives itself,
as it does online (among the items that exist before the batch). No item from later in the stream is ever a
negative. (Before, the batch's negatives came from the whole pre-training catalogue, items born later included.) At
the very start of the stream an interaction can have no eligible item at all (the first one never has): such an
interaction is not trained on, only revealed to the history.

Divergence: after every batch the batch's loss must be finite and every floating value of the meta state (the
meta-model's weights and its optimiser's moments) finite and at most :data:`META_BOUND` in magnitude; otherwise
:class:`~melonbench.core.errors.DivergenceError` names the epoch and the batch, and nothing is cached. A cached
meta-model that fails the same check when loaded is deleted and pre-trained again (``on_note`` says so).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from melonbench import __version__
from melonbench.core.config import config_hash, to_jsonable
from melonbench.core.errors import CheckpointError, DivergenceError
from melonbench.online.history import History
from melonbench.online.negatives import sample_training_negatives
from melonbench.online.seeding import generator
from melonbench.online.stream import Batch, Stream, batch_spans
from melonbench.store.atomic import atomic_write_bytes
from melonbench.store.paths import checkpoints_dir
from melonbench.strategies import build_strategy
from melonbench.strategies.base import Strategy

MetaCallback = Callable[[int, int, int], None]  # (epoch, batches done, batches per epoch)
NoteCallback = Callable[[str], None]  # a line for the console

META_BOUND = 1e8
"""Largest magnitude a value of a healthy meta state reaches. Measured after meta pre-training (BPR, synthetic and
Grocery, seeds 0–4, every meta strategy): weights ≤ 6, Adam moments ≤ 4e2 (SML's transfer network; the others
≤ 20). The exploded MeLON states of issue 16 held Adam moments of 1e15–1e24. 1e8 lies five orders of magnitude
above the first and seven below the second."""

PROCEDURE = 3
"""Version of what :func:`train_meta` computes, in the cache key (2: the online replay's negatives; 3: every pass
from the pre-trained recommender)."""


def meta_key(strategy: Strategy, checkpoint_key: str, seed: int, batch_size: int) -> str:
    return meta_key_of(strategy.name, strategy.config, checkpoint_key, seed, batch_size)


def meta_key_of(name: str, config: Any, checkpoint_key: str, seed: int, batch_size: int) -> str:
    """:func:`meta_key` from the strategy's name and resolved config, without building it (an executor asks)."""
    return config_hash("meta", name, to_jsonable(config), checkpoint_key, seed, batch_size, __version__, PROCEDURE)


def meta_path(name: str, key: str) -> Path:
    """Where the meta-model of strategy ``name`` and cache key ``key`` is cached."""
    return checkpoints_dir() / f"meta-{name}-{key}.pt"


def train_meta(
    strategy: Strategy,
    params: tuple[tuple[str, str], ...],
    stream: Stream,
    seed: int,
    batch_size: int,
    on_batch: MetaCallback | None = None,
) -> dict:
    """Run ``pretrain_step`` over the pre-training part on a copy of the recommender; return the meta state.

    Raises
    ------
    DivergenceError
        When a batch's loss is not finite or the meta state fails :func:`meta_state_problem`, naming the epoch and
        the batch.
    """
    gen = generator(seed, "meta-pretrain", stream.users.device)
    epochs = int(getattr(strategy.config, "meta_epochs", 1))
    spans = list(batch_spans(stream, ("pretrain",), batch_size))
    state: dict | None = None
    for epoch in range(1, epochs + 1):
        # every pass starts from the pre-trained recommender, as the online replay does; only the meta state
        # (the meta-model and its optimiser) carries over from one pass to the next
        trainer = build_strategy(strategy.name, copy.deepcopy(strategy.model), params, seed)
        if state is not None:
            trainer.load_meta_state_dict(state)
        history = History(stream.users, stream.items, stream.n_users, stream.n_items, cursor=0)
        for index, (split, lo, hi) in enumerate(spans):
            positions = torch.arange(lo, hi, device=stream.users.device)
            users, items = stream.users[lo:hi], stream.items[lo:hi]
            negatives = sample_training_negatives(history, users, items, positions, gen, allow_missing=True)
            trained = negatives >= 0
            if not bool(trained.all()):  # the stream's first interactions: nothing to contrast the positive with
                positions, users, items, negatives = (t[trained] for t in (positions, users, items, negatives))
            if positions.numel() > 0:
                batch = Batch(index, split, positions, users, items, stream.ts[positions], negatives)
                losses = trainer.pretrain_step(batch, history)
                if losses is None:
                    raise TypeError(f"{type(trainer).__name__}.pretrain_step returned no losses (meta strategies must)")
                problem = _loss_problem(losses) or meta_state_problem(trainer.meta_state_dict())
                if problem is not None:
                    raise DivergenceError(
                        f"meta pre-training of {strategy.name} (seed {seed}) diverged in epoch {epoch} at batch "
                        f"{index + 1} of {len(spans)}: {problem}; nothing was cached"
                    )
            history.advance(hi - lo)
            if on_batch is not None:
                on_batch(epoch, index + 1, len(spans))
        state = trainer.meta_state_dict()
    problem = meta_state_problem(state)
    if problem is not None:  # only reachable with no batch at all; kept so that nothing unchecked is ever returned
        raise DivergenceError(f"meta pre-training of {strategy.name} (seed {seed}) gave an unusable state: {problem}")
    return state


def meta_state_problem(state: Any) -> str | None:
    """Why ``state`` (a :meth:`~melonbench.strategies.base.Strategy.meta_state_dict`) is unusable, or None.

    Unusable: a floating value that is not finite, or larger than :data:`META_BOUND` in magnitude, anywhere in it
    (optimisers' step counters aside). One host synchronisation.
    """
    tensors = [(path, t) for path, t in _float_tensors(state, "") if t.numel() > 0]
    if not tensors:
        return None
    device = tensors[0][1].device
    worst = torch.stack([t.detach().abs().max().double().to(device) for _, t in tensors]).tolist()
    for (path, _), value in zip(tensors, worst, strict=True):
        if value != value or value == float("inf"):  # NaN (max propagates it) or ±inf
            return f"{path} holds non-finite values"
        if value > META_BOUND:
            return f"{path} reaches {value:.3g} (bound {META_BOUND:.0e})"
    return None


def _loss_problem(losses: torch.Tensor) -> str | None:
    mean = float(losses.detach().float().mean())  # one host synchronisation per batch
    return None if mean == mean and abs(mean) != float("inf") else f"the batch's loss became {mean}"


def _float_tensors(obj: Any, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not path.endswith(".step"):
            yield path, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _float_tensors(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for key, value in enumerate(obj):
            yield from _float_tensors(value, f"{path}.{key}" if path else str(key))


def load_or_train_meta(
    strategy: Strategy,
    params: tuple[tuple[str, str], ...],
    stream: Stream,
    checkpoint_key: str,
    seed: int,
    batch_size: int,
    on_batch: MetaCallback | None = None,
    on_note: NoteCallback | None = None,
) -> str:
    """Give ``strategy`` its pre-trained meta-model (cached), and return the cache key.

    A cached meta-model that fails :func:`meta_state_problem` (e.g. one cached before that check existed) is deleted
    and trained again, with a line to ``on_note``; a newly trained one is cached only when it passes.
    """
    key = meta_key(strategy, checkpoint_key, seed, batch_size)
    path = meta_path(strategy.name, key)
    if path.is_file():
        try:
            state = torch.load(path, map_location=stream.users.device, weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"meta-model checkpoint {path} is corrupt or incompatible ({type(exc).__name__}); delete it"
            ) from None
        problem = meta_state_problem(state)
        if problem is None:
            try:
                strategy.load_meta_state_dict(state)
            except Exception as exc:
                raise CheckpointError(
                    f"meta-model checkpoint {path} is corrupt or incompatible ({type(exc).__name__}); delete it"
                ) from None
            return key
        path.unlink()
        if on_note is not None:
            on_note(f"cached meta-model of {strategy.name} (seed {seed}) was unusable ({problem}): training it again")
    state = train_meta(strategy, params, stream, seed, batch_size, on_batch)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    strategy.load_meta_state_dict(state)
    return key
