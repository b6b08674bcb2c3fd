"""Per-coordinate recurrent state of a ``[rows, width]`` parameter, allocated for a row when it is first touched.

Used by S²Meta, whose MetaLSTM keeps an (h, c) state for every coordinate across online batches: memory grows with
the rows the stream touches, not with the catalogue.
"""

from __future__ import annotations

import torch


class LazyState:
    """The (h, c) LSTM state of each coordinate of a ``[rows, width]`` parameter, allocated on first touch.

    ``slot[row]`` is the row's index in the ``h`` / ``c`` buffers (``-1``: never touched). Buffers grow by doubling.
    """

    def __init__(self, n_rows: int, width: int, hidden: int, device: torch.device) -> None:
        self.width, self.hidden = width, hidden
        self.slot = torch.full((n_rows,), -1, dtype=torch.long, device=device)
        self.h = torch.zeros(0, width, hidden, device=device)
        self.c = torch.zeros(0, width, hidden, device=device)
        self.count = 0

    def read(self, rows: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """State of ``rows`` (unique) as two ``Float[R * width, H]``; untouched rows get ``(h0, c0)``."""
        shape = (rows.shape[0] * self.width, self.hidden)
        if self.count == 0:
            return h0.expand(shape), c0.expand(shape)
        slot = self.slot[rows]
        fresh = (slot < 0).nonzero().squeeze(1)  # one host synchronisation
        h = self.h.index_select(0, slot.clamp(min=0))  # [R, width, H], a new tensor: filled in place below
        c = self.c.index_select(0, slot.clamp(min=0))
        if fresh.shape[0]:  # in place, yet differentiable in (h0, c0): the untouched rows take them
            h.index_put_((fresh,), h0.expand(fresh.shape[0], self.width, self.hidden))
            c.index_put_((fresh,), c0.expand(fresh.shape[0], self.width, self.hidden))
        return h.reshape(shape), c.reshape(shape)

    @torch.no_grad()
    def write(self, rows: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> None:
        """Store the new state of ``rows`` (unique), allocating slots for rows seen for the first time."""
        fresh = rows[self.slot[rows] < 0]  # one host synchronisation: the number of new rows
        need = self.count + fresh.shape[0]
        if need > self.h.shape[0]:
            grow = max(need, 2 * self.h.shape[0]) - self.h.shape[0]
            pad = torch.zeros(grow, self.width, self.hidden, device=self.h.device)
            self.h, self.c = torch.cat([self.h, pad]), torch.cat([self.c, pad])
        self.slot[fresh] = torch.arange(self.count, need, device=rows.device)
        self.count = need
        slot = self.slot[rows]
        self.h.index_copy_(0, slot, h.reshape(-1, self.width, self.hidden))
        self.c.index_copy_(0, slot, c.reshape(-1, self.width, self.hidden))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"slot": self.slot.clone(), "h": self.h[: self.count].clone(), "c": self.c[: self.count].clone()}

    def fresh(self, rows: torch.Tensor) -> torch.Tensor:
        """``Float[R * width]``: 1 for each coordinate of ``rows`` that has no state yet (it reads ``(h0, c0)``)."""
        return (self.slot[rows] < 0).to(self.h.dtype).repeat_interleave(self.width)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.slot = state["slot"].clone().to(self.slot.device)
        self.h, self.c = state["h"].clone().to(self.slot.device), state["c"].clone().to(self.slot.device)
        self.count = self.h.shape[0]


class DenseState:
    """:class:`LazyState`'s interface with buffers for every row from the start: fixed shapes and no host
    synchronisation, for CUDA graphs (memory: ``2 · rows · width · hidden`` floats, whatever the stream touches).

    ``state_dict`` is :class:`LazyState`'s format (slots given in row order), so the two load each other's states.
    """

    def __init__(self, n_rows: int, width: int, hidden: int, device: torch.device) -> None:
        self.width, self.hidden = width, hidden
        self.h = torch.zeros(n_rows, width, hidden, device=device)
        self.c = torch.zeros(n_rows, width, hidden, device=device)
        self.seen = torch.zeros(n_rows, dtype=torch.bool, device=device)

    def read(self, rows: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """State of ``rows`` as two ``Float[R * width, H]``; untouched rows get ``(h0, c0)``."""
        shape = (rows.shape[0] * self.width, self.hidden)
        seen = self.seen[rows].view(-1, 1, 1)
        return torch.where(seen, self.h[rows], h0).reshape(shape), torch.where(seen, self.c[rows], c0).reshape(shape)

    @torch.no_grad()
    def write(self, rows: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> None:
        """Store the new state of ``rows`` (a repeated row must come with the same values each time)."""
        self.h.index_copy_(0, rows, h.reshape(-1, self.width, self.hidden))
        self.c.index_copy_(0, rows, c.reshape(-1, self.width, self.hidden))
        self.seen.index_fill_(0, rows, True)

    def fresh(self, rows: torch.Tensor) -> torch.Tensor:
        """``Float[R * width]``: 1 for each coordinate of ``rows`` that has no state yet (it reads ``(h0, c0)``)."""
        return (~self.seen[rows]).to(self.h.dtype).repeat_interleave(self.width)

    def state_dict(self) -> dict[str, torch.Tensor]:
        rows = self.seen.nonzero().squeeze(1)
        slot = torch.full(self.seen.shape, -1, dtype=torch.long, device=self.seen.device)
        slot[rows] = torch.arange(rows.shape[0], device=rows.device)
        return {"slot": slot, "h": self.h[rows].clone(), "c": self.c[rows].clone()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """In place (a captured graph keeps reading these buffers)."""
        slot = state["slot"].to(self.seen.device)
        rows = (slot >= 0).nonzero().squeeze(1)
        self.h.zero_()
        self.c.zero_()
        self.h[rows] = state["h"].to(self.h.device)[slot[rows]]
        self.c[rows] = state["c"].to(self.c.device)[slot[rows]]
        self.seen.copy_(slot >= 0)
