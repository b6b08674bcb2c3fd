"""A tiny random interaction stream for fast contract tests (no files, no preparation)."""

from __future__ import annotations

import torch

from melonbench.models import build_model
from melonbench.online.history import History
from melonbench.online.negatives import sample_negatives
from melonbench.online.stream import Batch, Stream


def tiny_stream(n_users: int = 30, n_items: int = 40, n: int = 600, seed: int = 0) -> Stream:
    """A random stream: 70% pre-train, 10% validation, 20% test."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, n_users, (n,), generator=g)
    items = torch.randint(0, n_items, (n,), generator=g)
    users[:n_users] = torch.arange(n_users)  # every id occurs, so the id ranges are exact
    items[:n_items] = torch.arange(n_items)
    return Stream(users, items, torch.arange(n) * 60, n_users, n_items, int(n * 0.7), int(n * 0.8))


def tiny_model(name: str, stream: Stream, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, stream.n_users, stream.n_items, dim=8)


def online_batches(stream: Stream, history: History, size: int = 32, count: int = 4, seed: int = 0) -> list[Batch]:
    """The first ``count`` online batches with training negatives (the history's cursor is left unchanged)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        lo = stream.pretrain_end + index * size
        hi = lo + size
        pos = torch.arange(lo, hi)
        users, items = stream.users[lo:hi], stream.items[lo:hi]
        neg = sample_negatives(history, users, items, pos, 1, g)[:, 0]
        out.append(Batch(index, "validation", pos, users, items, stream.ts[lo:hi], neg))
    return out
