"""Negative sampling without look-ahead: uniform, without replacement, among items that exist and are unseen.

For an interaction of user u at stream position p, the eligible items are those that first appeared before p,
minus the positive, minus the items u interacted with before p (``exclude="before"``, the leak-free rule) or at
any time (``exclude="ever"``, the ``paper`` protocol's documented look-ahead).

Method: one vectorised rejection round draws ``2n + 16`` items per row uniformly from the existing ones (they are
a prefix of ``History.items_by_first``), drops ineligible draws and repeats, and keeps the first ``n`` survivors
in draw order. Rows left short (rare: a small eligible set) are refilled by an exact draw from their eligibility
mask. Either way each row is a uniformly random ordered sample of ``n`` distinct eligible items, and the result
depends only on the generator's state. One host synchronisation per call (to find the short rows).
"""

from __future__ import annotations

from typing import Literal

import torch

from melonbench.core.errors import DataError
from melonbench.online.history import History, lookup

Exclude = Literal["before", "ever"]

ROW_CHUNK = 1 << 14
"""Rows sampled together; bounds memory when drawing evaluation negatives for a whole online part at once."""

MASK_BUDGET = 1 << 24
"""Most elements of one ``[rows, n_items]`` eligibility mask in the exact refill."""


def sample_negatives(
    history: History,
    users: torch.Tensor,
    positives: torch.Tensor,
    positions: torch.Tensor,
    n: int,
    generator: torch.Generator,
    *,
    exclude: Exclude = "before",
    exist_positions: torch.Tensor | None = None,
    allow_missing: bool = False,
) -> torch.Tensor:
    """Draw ``n`` distinct negatives per interaction.

    Parameters
    ----------
    history : History
        The indexed stream.
    users, positives, positions : Long[B]
        Each interaction's user, positive item and stream position ``p``.
    n : int
        Negatives per interaction.
    generator : torch.Generator
        On the same device as ``users``; the only source of randomness.
    exclude : {"before", "ever"}
        Exclude the user's items before ``p`` (leak-free) or in the whole stream (the ``paper`` protocol).
    exist_positions : Long[B], optional
        Draw among items that appeared before these positions instead of before ``positions`` (e.g. the end of
        the pre-training part, for pre-training negatives at the very start of the stream, where few items exist
        yet). The user's history is still cut at ``positions``.
    allow_missing : bool
        Fill the row of an interaction with fewer than ``n`` eligible items with −1 instead of raising (the other
        rows' draws are the same either way).

    Returns
    -------
    Long[B, n]
        Row ``b`` holds ``n`` distinct eligible items in random order (or −1s, see ``allow_missing``).

    Raises
    ------
    DataError
        If some interaction has fewer than ``n`` eligible items (unless ``allow_missing``).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if exclude not in ("before", "ever"):
        raise ValueError(f"exclude must be 'before' or 'ever', got {exclude!r}")
    exist_at = positions if exist_positions is None else exist_positions
    out = torch.empty(users.shape[0], n, dtype=torch.long, device=users.device)
    for lo in range(0, users.shape[0], ROW_CHUNK):
        rows = slice(lo, lo + ROW_CHUNK)
        out[rows] = _sample_rows(
            history, users[rows], positives[rows], positions[rows], exist_at[rows], n, generator, exclude, allow_missing
        )
    return out


def sample_training_negatives(
    history: History,
    users: torch.Tensor,
    positives: torch.Tensor,
    positions: torch.Tensor,
    generator: torch.Generator,
    *,
    exclude: Exclude = "before",
    exist_positions: torch.Tensor | None = None,
    allow_missing: bool = False,
) -> torch.Tensor:
    """One negative per interaction (``Long[B]``) under the rule of :func:`sample_negatives`."""
    return sample_negatives(
        history,
        users,
        positives,
        positions,
        1,
        generator,
        exclude=exclude,
        exist_positions=exist_positions,
        allow_missing=allow_missing,
    )[:, 0]


def _sample_rows(
    history: History,
    users: torch.Tensor,
    positives: torch.Tensor,
    positions: torch.Tensor,
    exist_at: torch.Tensor,
    n: int,
    generator: torch.Generator,
    exclude: Exclude,
    allow_missing: bool = False,
) -> torch.Tensor:
    """One rejection round for every row, then an exact refill of the rows it left short."""
    out, complete = _rejection_round(history, users, positives, positions, exist_at, n, generator, exclude)
    if not bool(complete.all()):
        short = (~complete).nonzero().squeeze(1)
        out[short] = _exact_draw(
            history,
            users[short],
            positives[short],
            positions[short],
            exist_at[short],
            n,
            generator,
            exclude,
            allow_missing,
        )
    return out


def _rejection_round(
    history: History,
    users: torch.Tensor,
    positives: torch.Tensor,
    positions: torch.Tensor,
    exist_at: torch.Tensor,
    n: int,
    generator: torch.Generator,
    exclude: Exclude,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``2n + 16`` existing items per row; keep the first ``n`` distinct eligible ones.

    Returns ``Long[B, n]`` (rows marked incomplete hold garbage) and ``Bool[B]`` complete.
    """
    rows, draws = users.shape[0], 2 * n + 16
    n_existing = history.count_existing(exist_at).unsqueeze(1)  # [B, 1]
    # 62 random bits modulo the count: the bias (< count / 2**62) is far below anything measurable
    raw = torch.randint(0, 1 << 62, (rows, draws), generator=generator, device=users.device)
    cand = lookup(history.items_by_first, raw % n_existing.clamp(min=1))  # [B, M]
    seen = history.seen_before(users, cand, positions) if exclude == "before" else history.seen_ever(users, cand)
    valid = (n_existing > 0) & ~seen & (cand != positives.unsqueeze(1))
    # One negative per row (training negatives): the first valid draw is always its value's first occurrence
    # (validity depends on the value alone within a row), so the repeat check, a sort, changes nothing.
    keep = valid & ~_repeats(cand) if n > 1 else valid
    rank = keep.cumsum(1)  # 1-based slot of each kept draw
    take = keep & (rank <= n)
    slots = torch.where(take, rank - 1, n)  # draws not taken land in a spare column
    out = torch.zeros(rows, n + 1, dtype=torch.long, device=users.device).scatter_(1, slots, cand)
    return out[:, :n], rank[:, -1] >= n


def _repeats(values: torch.Tensor) -> torch.Tensor:
    """``Bool[B, M]``: True where the value already occurred earlier in its row."""
    sorted_values, order = torch.sort(values, dim=1, stable=True)  # stable: the first occurrence sorts first
    again = torch.zeros_like(values, dtype=torch.bool)
    again[:, 1:] = sorted_values[:, 1:] == sorted_values[:, :-1]
    return torch.zeros_like(again).scatter_(1, order, again)


def _exact_draw(
    history: History,
    users: torch.Tensor,
    positives: torch.Tensor,
    positions: torch.Tensor,
    exist_at: torch.Tensor,
    n: int,
    generator: torch.Generator,
    exclude: Exclude,
    allow_missing: bool = False,
) -> torch.Tensor:
    """Draw from each row's full eligibility mask: the top ``n`` of uniform keys over eligible items (−1s for a row
    with fewer than ``n`` eligible items, with ``allow_missing``)."""
    out = torch.empty(users.shape[0], n, dtype=torch.long, device=users.device)
    step = max(1, MASK_BUDGET // history.n_items)
    for lo in range(0, users.shape[0], step):
        rows = slice(lo, lo + step)
        cut = positions[rows] if exclude == "before" else torch.full_like(positions[rows], history.n_interactions)
        eligible = history.exists_mask(exist_at[rows]) & ~history.user_items_mask(users[rows], cut)
        eligible.scatter_(1, positives[rows].unsqueeze(1), False)
        counts = eligible.sum(1)
        if not allow_missing and bool((counts < n).any()):
            bad = int((counts < n).nonzero()[0, 0])
            raise DataError(
                f"Cannot draw {n} distinct negative{'s' if n > 1 else ''} for the interaction at stream position "
                f"{int(positions[rows][bad])} (user {int(users[rows][bad])}): only {int(counts[bad])} items are "
                f"eligible (appeared before it, not the positive, not in the user's history); use fewer negatives"
            )
        keys = torch.rand(eligible.shape, generator=generator, device=users.device)
        drawn = torch.where(eligible, keys, -1.0).topk(n, dim=1).indices
        out[rows] = torch.where((counts < n).unsqueeze(1), -1, drawn)
    return out
