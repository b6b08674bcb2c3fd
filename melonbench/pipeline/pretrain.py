"""Offline pre-training of a recommender on the pre-training part, cached by content hash.

Adam, batch 256, one fresh training negative per interaction per epoch drawn from the items the user has not
interacted with up to that interaction's position; after each epoch, HR@5 of the *static* model on the
validation part (sampled protocol, the persisted leak-free negatives) picks the kept epoch, with early stopping
after ``patience`` epochs without improvement. The test part is never looked at. Every strategy and run that
asks for the same (dataset, model config, seed, code version) reuses the same checkpoint file.
"""

from __future__ import annotations

import copy
import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from melonbench import __version__
from melonbench.core.config import PretrainConfig, config_hash, to_jsonable
from melonbench.core.errors import CheckpointError, DivergenceError
from melonbench.core.registry import lookup
from melonbench.models import MODELS
from melonbench.models.base import Recommender
from melonbench.online.history import History
from melonbench.online.metrics import hit_rate, sampled_ranks
from melonbench.online.negatives import sample_training_negatives
from melonbench.online.seeding import derive_seed, generator
from melonbench.online.stream import Stream
from melonbench.store.atomic import atomic_write_bytes
from melonbench.store.paths import checkpoints_dir

EpochCallback = Callable[[int, float, float], None]  # (epoch, mean train loss, validation HR@5)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A pre-trained recommender and where it came from."""

    model: Recommender
    key: str
    path: Path
    info: dict[str, Any]


def checkpoint_key(dataset_fingerprint: str, model: str, config: PretrainConfig, seed: int) -> str:
    """Content hash of everything that determines the pre-trained weights, the model's tables included."""
    return config_hash(
        "recommender", dataset_fingerprint, model, config, seed, __version__, architecture(model, config)
    )


def checkpoint_path(model: str, key: str) -> Path:
    """Where the checkpoint of ``key`` (:func:`checkpoint_key`) is cached."""
    return checkpoints_dir() / f"{model}-{key}.pt"


def architecture(model: str, config: PretrainConfig) -> dict[str, list[int]]:
    """The model's parameter names and shapes for one user and one item, built on the meta device (no memory, no
    random draws): in the checkpoint key, so that a checkpoint of an older layout (e.g. one with the user bias that
    BPR and NCF no longer have) is never loaded, but pre-trained again under a new key."""
    cls = lookup("model", model, MODELS)
    with torch.device("meta"):
        net = cls(1, 1, **cls.config_kwargs(config))
    return {name: list(p.shape) for name, p in net.state_dict().items()}


def init_model(model: str, stream: Stream, config: PretrainConfig, seed: int) -> Recommender:
    """Build the recommender (its settings from ``config``: ``dim``, ...) with weights drawn on the CPU from ``seed``
    (identical on every device)."""
    cls = lookup("model", model, MODELS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model-init"))
        net = cls(stream.n_users, stream.n_items, **cls.config_kwargs(config))
    return net.to(stream.users.device)


@torch.no_grad()
def validation_hr5(model: Recommender, stream: Stream, negatives: torch.Tensor, chunk: int = 4096) -> float:
    """Mean HR@5 of the static model over the validation part (``negatives``: ``Long[n_val, n]``)."""
    start, stop = stream.bounds("validation")
    if stop == start:
        return float("nan")
    hits = torch.zeros((), device=stream.users.device)
    for lo in range(start, stop, chunk):
        hi = min(lo + chunk, stop)
        users, items = stream.users[lo:hi], stream.items[lo:hi]
        scores = model.score(users, torch.cat([items[:, None], negatives[lo - start : hi - start]], dim=1))
        hits += hit_rate(sampled_ranks(scores[:, 0], scores[:, 1:]), 5).sum()
    return float(hits) / (stop - start)


def pretrain_recommender(
    model_name: str,
    stream: Stream,
    config: PretrainConfig,
    seed: int,
    validation_negatives: torch.Tensor,
    on_epoch: EpochCallback | None = None,
) -> tuple[Recommender, dict[str, Any]]:
    """Pre-train from scratch; return the model at its best validation epoch and a training record.

    A model without learnable parameters (``pop``, ``recent-pop``) is "pre-trained" by counting the pre-training
    part; its record has no epochs.
    """
    model = init_model(model_name, stream, config, seed)
    if not model.learnable:
        model.observe(stream.items, 0, stream.pretrain_end)  # type: ignore[operator]
        hr = validation_hr5(model, stream, validation_negatives)
        return model, {"best_epoch": 0, "best_val_hr@5": None if hr != hr else hr, "curve": []}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    device = stream.users.device
    gen = generator(seed, "pretrain", device)
    history = History(stream.users, stream.items, stream.n_users, stream.n_items)
    n = stream.pretrain_end
    users, items = stream.users[:n], stream.items[:n]
    positions = torch.arange(n, device=device)
    # Negatives come from the whole pre-training catalogue (an item need not exist before the interaction: the
    # first interactions would have no candidates), never from the user's own items up to that interaction.
    exists_at = torch.full_like(positions, n)

    best_hr, best_epoch, best_state, curve = -1.0, 0, copy.deepcopy(model.state_dict()), []
    for epoch in range(1, config.epochs + 1):
        negatives = sample_training_negatives(history, users, items, positions, gen, exist_positions=exists_at)
        order = torch.randperm(n, generator=gen, device=device)
        total = torch.zeros((), device=device)
        for lo in range(0, n, config.batch_size):
            idx = order[lo : lo + config.batch_size]
            loss = model.bpr_loss(users[idx], items[idx], negatives[idx]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * idx.numel()
        mean_loss = float(total) / max(n, 1)  # one host sync per epoch
        if not torch.isfinite(torch.tensor(mean_loss)):
            raise DivergenceError(f"pre-training loss became {mean_loss} in epoch {epoch}; try a smaller --lr")
        hr = validation_hr5(model, stream, validation_negatives)
        curve.append({"epoch": epoch, "loss": mean_loss, "val_hr@5": hr})
        if on_epoch is not None:
            on_epoch(epoch, mean_loss, hr)
        if hr != hr:  # no validation part: keep the last epoch
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
        elif hr > best_hr:
            best_hr, best_epoch, best_state = hr, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    info = {"best_epoch": best_epoch, "best_val_hr@5": best_hr if best_hr >= 0 else None, "curve": curve}
    return model, info


def load_or_pretrain(
    model_name: str,
    stream: Stream,
    config: PretrainConfig,
    seed: int,
    dataset_fingerprint: str,
    validation_negatives: torch.Tensor,
    on_epoch: EpochCallback | None = None,
    force: bool = False,
) -> Checkpoint:
    """Return the cached checkpoint for this (dataset, model, config, seed), pre-training it if needed."""
    key = checkpoint_key(dataset_fingerprint, model_name, config, seed)
    path = checkpoint_path(model_name, key)
    if path.is_file() and not force:
        model = init_model(model_name, stream, config, seed)
        try:
            payload = torch.load(path, map_location=stream.users.device, weights_only=True)
            model.load_state_dict(payload["state"])
        except Exception as exc:  # a truncated or foreign file: refuse rather than guess
            raise CheckpointError(
                f"checkpoint {path} is corrupt or incompatible ({type(exc).__name__}); delete it to pre-train again"
            ) from None
        if payload.get("key") != key:
            raise CheckpointError(f"checkpoint {path} was made for another configuration; delete it")
        return Checkpoint(model, key, path, payload["info"])
    model, info = pretrain_recommender(model_name, stream, config, seed, validation_negatives, on_epoch)
    info = {**info, "model": model_name, "seed": seed, "config": to_jsonable(config), "dataset": dataset_fingerprint}
    buf = io.BytesIO()
    torch.save({"key": key, "state": model.state_dict(), "info": info}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Checkpoint(model, key, path, info)
