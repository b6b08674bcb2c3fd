"""Evaluation negatives of the sampled protocol, drawn once per (dataset, seed, protocol) and persisted.

Every strategy and model replayed on the same dataset with the same seed is ranked against the identical
negatives, so their per-batch metrics pair exactly. They are drawn on the CPU from a dedicated generator (so a
CUDA run sees the same ones) and stored next to the prepared dataset; re-preparing the dataset removes them.

- ``leakfree``: n distinct items that exist before the interaction, excluding the positive and the items the
  user interacted with before it.
- ``paper``: as the published code, excluding every item the user ever interacts with (the future too): a
  documented look-ahead leak, reproduced on purpose.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from melonbench.online.history import History
from melonbench.online.negatives import sample_negatives
from melonbench.online.seeding import generator
from melonbench.online.stream import Stream
from melonbench.store.atomic import atomic_write_bytes

_CHUNK = 65_536  # rows per draw: bounds the temporary memory of rejection sampling


def negatives_path(dataset_dir: Path, seed: int, protocol: str, n: int) -> Path:
    return dataset_dir / "negatives" / f"{protocol}-seed{seed}-n{n}.npy"


def evaluation_negatives(
    dataset_dir: Path, stream: Stream, seed: int, protocol: str, n: int
) -> tuple[torch.Tensor, str]:
    """``(Long[n_online, n], sha256)``: the negatives of every online position (validation then test).

    Loaded from disk when present, drawn and saved atomically otherwise. The tensor is on the stream's device.
    """
    path = negatives_path(dataset_dir, seed, protocol, n)
    n_online = stream.n - stream.pretrain_end
    if path.is_file():
        raw = path.read_bytes()
        table = np.load(io.BytesIO(raw))
        if table.shape == (n_online, n):
            return torch.from_numpy(table.astype(np.int64)).to(stream.users.device), hashlib.sha256(raw).hexdigest()
    table = _draw(stream, seed, protocol, n)
    buf = io.BytesIO()
    np.save(buf, table)
    raw = buf.getvalue()
    atomic_write_bytes(path, raw)
    return torch.from_numpy(table.astype(np.int64)).to(stream.users.device), hashlib.sha256(raw).hexdigest()


def _draw(stream: Stream, seed: int, protocol: str, n: int) -> np.ndarray:
    users, items = stream.users.cpu(), stream.items.cpu()
    history = History(users, items, stream.n_users, stream.n_items)
    gen = generator(seed, f"eval-negatives/{protocol}")
    exclude = "ever" if protocol == "paper" else "before"
    parts = []
    for lo in range(stream.pretrain_end, stream.n, _CHUNK):
        hi = min(lo + _CHUNK, stream.n)
        positions = torch.arange(lo, hi)
        parts.append(sample_negatives(history, users[lo:hi], items[lo:hi], positions, n, gen, exclude=exclude))
    table = torch.cat(parts) if parts else torch.empty(0, n, dtype=torch.long)
    return table.numpy().astype(np.int32)
