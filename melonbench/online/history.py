"""A static, device-resident index of the whole ordered stream, queried "as of" a position.

The replay knows every interaction of the prepared stream in time order (positions ``0 .. N-1``: pre-train,
validation, then test rows). :class:`History` indexes all of it once and answers questions about the past only:

- queries that take ``positions`` answer "at a stream position < p" for each row's own ``p`` (for a batch, ``p``
  is each interaction's own position, so earlier rows of the same batch count as past for later rows);
- queries without ``positions`` answer "before the cursor", where the cursor is the first position not yet
  revealed (the start of the batch being ranked); the replay moves it with :meth:`History.advance`;
- :meth:`History.seen_ever` is the one deliberate exception, for the ``paper`` protocol's documented look-ahead.

Memory is O(N + n_users + n_items): sorted pair keys ``u * n_items + i`` with first positions, and two CSR layouts
(by user, by item) sorted by position, each with how many of an id's interactions lie before the cursor (moved by
:meth:`History.advance`, so that B_t^last and the recent neighbours are gathers, not binary searches). The one dense
user × item structure is for small catalogues only: with at most :data:`DENSE_PAIRS` (user, item) pairs, the first
position of every pair is also kept as a flat int32 table (≤ 64 MiB), so that the negative samplers' pair look-ups
are a gather instead of a binary search (on a 2-core CPU, 5,700 look-ups: 245 µs → ~10 µs; same answers). The only
per-query dense outputs are ``[B, n_items]`` masks. Nothing here synchronises with the host except
:meth:`History.last_positions` (its length depends on the data) and the constructor.
"""

from __future__ import annotations

import torch


def lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a 1-D ``table`` and an index of any shape, by ``index_select``.

    The same values as advanced indexing; on a CPU, random look-ups into a table larger than the cache are about
    3× faster this way (9,216 look-ups into the 7 MiB pair table: 190 → 56 µs), and they are the hot path of the
    negative samplers.
    """
    return table.index_select(0, index.reshape(-1)).view(index.shape)


DENSE_PAIRS = 1 << 24
"""Largest ``n_users × n_items`` for which pair look-ups use a dense first-position table (int32: 64 MiB)."""


class _Csr:
    """Interactions grouped by one id (user or item), each group sorted by position, as of the cursor.

    ``end[id]``: one past the id's last entry before the cursor, so that its revealed interactions are entries
    ``start[id] .. end[id] - 1`` in time order. :meth:`reveal` moves it as the cursor advances: a query "before the
    cursor" is then a gather, not a binary search over the whole stream.
    """

    def __init__(self, ids: torch.Tensor, others: torch.Tensor, n_ids: int, cursor: int) -> None:
        n = ids.shape[0]
        sorted_ids, order = torch.sort(ids, stable=True)  # stable: positions ascend within an id
        self.position = order
        self.other = others[order]
        self.degree = torch.bincount(ids, minlength=n_ids)
        self.start = torch.cumsum(self.degree, 0) - self.degree
        self.max_degree = int(self.degree.max()) if n else 0
        key = sorted_ids * (n + 1) + order  # globally sorted: (id, position)
        self.end = torch.searchsorted(key, torch.arange(n_ids, device=ids.device) * (n + 1) + cursor)

    def reveal(self, ids: torch.Tensor) -> None:
        """The cursor moves over interactions of ``ids`` (``Long[n]``, one entry per interaction, repeats counted)."""
        # accumulate=True: deterministic on CUDA too (and integer sums do not depend on order anyway)
        self.end.index_put_((ids,), torch.ones_like(ids), accumulate=True)

    def recent(self, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``k`` most recent partners of each id before the cursor (most recent first), and a validity mask."""
        end = lookup(self.end, ids)  # [B]
        count = end - lookup(self.start, ids)
        back = torch.arange(k, device=ids.device)  # [K]
        idx = (end.unsqueeze(1) - 1 - back).clamp(min=0)  # [B, K]
        valid = back < count.unsqueeze(1)
        return torch.where(valid, lookup(self.other, idx), 0), valid

    def sample(self, ids: torch.Tensor, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to ``k`` partners of each id before the cursor, drawn uniformly without replacement (all of them when
        there are at most ``k``), most recent first, and a validity mask.

        Robert Floyd's algorithm, run for every id at once: for s = 0 .. k − 1, with j = count − k + s, draw t
        uniformly in 0 .. j and take j instead when t is already taken; this gives every k-subset of the ``count``
        partners the same probability. Fixed shapes (``[B, k]`` draws per call whatever the counts), no host
        synchronisation.
        """
        start = lookup(self.start, ids)
        count = lookup(self.end, ids) - start  # [B]
        back = torch.arange(k, device=ids.device)  # [K]
        # 62 random bits modulo j + 1: the bias (< count / 2**62) is far below anything measurable
        raw = torch.randint(0, 1 << 62, (ids.shape[0], k), generator=gen, device=ids.device)
        chosen = torch.full_like(raw, -1)  # offsets into the id's partners, in time order
        for s in range(k):
            j = count - k + s
            t = raw[:, s] % (j + 1).clamp(min=1)
            chosen[:, s] = torch.where((chosen == t.unsqueeze(1)).any(1), j, t)
        chosen = torch.where((count <= k).unsqueeze(1), torch.where(back < count.unsqueeze(1), back, -1), chosen)
        chosen = torch.sort(chosen, dim=1, descending=True).values  # most recent first, invalid (-1) last
        valid = chosen >= 0
        return torch.where(valid, lookup(self.other, start.unsqueeze(1) + chosen.clamp(min=0)), 0), valid

    def last_position(self, ids: torch.Tensor) -> torch.Tensor:
        """Position of each id's last interaction before the cursor, or -1 if it has none."""
        end = lookup(self.end, ids)
        last = lookup(self.position, (end - 1).clamp(min=0))
        return torch.where(end > lookup(self.start, ids), last, -1)


class History:
    """The ordered stream, indexed for "what happened before position p" queries.

    Parameters
    ----------
    users, items : Long[N]
        The whole stream in time order; position = row index. The device of ``users`` is used throughout.
    n_users, n_items : int
        Sizes of the dense id ranges.
    cursor : int
        Number of positions already revealed (``0 .. N``); e.g. the start of the online part, or where an
        interrupted replay resumes.
    neighbours : int
        ``K``, the number of recent neighbours returned by :meth:`user_neighbours` / :meth:`item_neighbours`.

    Attributes
    ----------
    users, items : Long[N]
        The stream (``users[last_positions(...)]`` gives the users of B_t^last).
    items_by_first : Long[n_items]
        Items in order of first appearance (never-seen items last); see :meth:`count_existing`.

    Notes
    -----
    Repeated (user, item) pairs are allowed: "seen" queries use the pair's first position, neighbour queries
    list interactions (a repeated item can appear twice among a user's neighbours).
    """

    def __init__(
        self,
        users: torch.Tensor,
        items: torch.Tensor,
        n_users: int,
        n_items: int,
        cursor: int = 0,
        neighbours: int = 10,
    ) -> None:
        if users.ndim != 1 or users.shape != items.shape:
            raise ValueError(
                f"users and items must be 1-D of equal length, got {tuple(users.shape)}, {tuple(items.shape)}"
            )
        if users.device != items.device:
            raise ValueError(f"users and items are on different devices ({users.device}, {items.device})")
        self.device = users.device
        self.n_users = n_users
        self.n_items = n_items
        self.n_interactions = n = users.shape[0]
        if n == 0:
            raise ValueError("History needs a non-empty stream")
        if not 0 <= cursor <= n:
            raise ValueError(f"cursor must be in 0..{n}, got {cursor}")
        if neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {neighbours}")
        self._cursor = cursor
        self.neighbours = neighbours
        self.users = users = users.long()
        self.items = items = items.long()
        for name, ids, size in (("user", users, n_users), ("item", items, n_items)):
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= size:
                raise ValueError(f"{name} ids must be in 0..{size - 1}, got {low}..{high}")
        positions = torch.arange(n, device=self.device)

        keys, order = torch.sort(users * n_items + items, stable=True)
        first = torch.ones_like(keys, dtype=torch.bool)
        first[1:] = keys[1:] != keys[:-1]
        self._pair_key = keys[first]  # sorted unique (user, item) keys
        self._pair_first = order[first]  # stable sort: the first position of each pair
        self._pair_table = None  # the same as a dense [n_users * n_items] table, n where a pair never occurs
        if n_users * n_items <= DENSE_PAIRS and n < 2**31 - 1:
            self._pair_table = torch.full((n_users * n_items,), n, dtype=torch.int32, device=self.device)
            self._pair_table[self._pair_key] = self._pair_first.int()

        never = torch.full((n_items,), n, dtype=torch.long, device=self.device)
        self._item_first = never.scatter_reduce(0, items, positions, reduce="amin")
        self._user_first = torch.full((n_users,), n, dtype=torch.long, device=self.device).scatter_reduce(
            0, users, positions, reduce="amin"
        )
        # items ordered by first appearance: the items existing before p are a prefix of this order
        self._sorted_item_first, self.items_by_first = torch.sort(self._item_first, stable=True)

        self._by_user = _Csr(users, items, n_users, cursor)
        self._by_item = _Csr(items, users, n_items, cursor)

    @property
    def cursor(self) -> int:
        """Positions ``< cursor`` are revealed (the past); the batch being ranked starts at ``cursor``."""
        return self._cursor

    def advance(self, n: int) -> None:
        """Reveal the next ``n`` positions (call after each batch is ranked and learned from)."""
        if n < 0 or self._cursor + n > self.n_interactions:
            raise ValueError(f"cannot advance by {n} from {self._cursor} in a stream of {self.n_interactions}")
        revealed = slice(self._cursor, self._cursor + n)
        self._by_user.reveal(self.users[revealed])
        self._by_item.reveal(self.items[revealed])
        self._cursor += n

    def seen_before(self, users: torch.Tensor, items: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Whether user ``users[b]`` interacted with ``items[b, c]`` at a position < ``positions[b]``.

        Parameters
        ----------
        users : Long[B]
        items : Long[B, C]
        positions : Long[B]

        Returns
        -------
        Bool[B, C]
        """
        return self._first_position(users, items) < positions.unsqueeze(1)

    def seen_ever(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether the pair occurs anywhere in the stream, future included (the ``paper`` protocol's leak).

        Shapes as :meth:`seen_before`: ``users [B]``, ``items [B, C]`` → ``Bool[B, C]``.
        """
        return self._first_position(users, items) < self.n_interactions

    def item_exists(self, items: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Whether each item first appeared at a position < ``positions`` (shapes broadcast) → Bool."""
        return lookup(self._item_first, items) < positions

    def user_exists(self, users: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Whether each user first appeared at a position < ``positions`` (shapes broadcast); False = cold user."""
        return lookup(self._user_first, users) < positions

    def count_existing(self, positions: torch.Tensor) -> torch.Tensor:
        """Number of items that appeared before each position: ``items_by_first[:count]`` are exactly those items.

        Parameters
        ----------
        positions : Long[...]

        Returns
        -------
        Long[...]
        """
        return torch.searchsorted(self._sorted_item_first, positions.contiguous())

    def exists_mask(self, positions: torch.Tensor) -> torch.Tensor:
        """Items that appeared at a position < ``positions[b]``: ``Bool[B, n_items]`` (full-ranking candidates)."""
        return self._item_first.unsqueeze(0) < positions.unsqueeze(1)

    def user_items_mask(self, users: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Items user ``users[b]`` interacted with at a position < ``positions[b]``: ``Bool[B, n_items]``.

        Pass ``positions = n_interactions`` for the user's whole history (the ``paper`` protocol).
        Cost ``O(B × largest user history)``.
        """
        csr = self._by_user
        span = torch.arange(csr.max_degree, device=self.device)  # [D]
        idx = (csr.start[users].unsqueeze(1) + span).clamp(max=self.n_interactions - 1)  # [B, D]
        valid = (span < csr.degree[users].unsqueeze(1)) & (csr.position[idx] < positions.unsqueeze(1))
        cols = torch.where(valid, csr.other[idx], self.n_items)  # invalid entries go to a spare column
        mask = torch.zeros(users.shape[0], self.n_items + 1, dtype=torch.bool, device=self.device)
        return mask.scatter_(1, cols, True)[:, : self.n_items]

    def last_positions_padded(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`last_positions` without a host synchronisation: ``Long[2B]`` sorted, and ``Bool[2B]`` validity.

        Invalid entries (duplicates, and users/items with no interaction before the cursor) are flagged, not
        removed, so the output length is fixed.
        """
        last = torch.cat((self._by_user.last_position(users), self._by_item.last_position(items)))
        last, _ = torch.sort(last)
        valid = last >= 0
        valid[1:] &= last[1:] != last[:-1]
        return last, valid

    def last_positions(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """B_t^last: positions of the last interaction before the cursor of each user and of each item given.

        Parameters
        ----------
        users, items : Long[B]
            The batch's users and items.

        Returns
        -------
        Long[M]
            Sorted unique positions, all ``< cursor`` (``M <= 2B``; one host synchronisation, since ``M``
            depends on the data).
        """
        last, valid = self.last_positions_padded(users, items)
        return last[valid]

    def user_neighbours(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of the ``K`` most recent interactions of each user before the cursor, most recent first.

        Returns
        -------
        tuple[Long[B, K], Bool[B, K]]
            Item ids (0 where invalid, so they can be embedded safely) and the validity mask.
        """
        return self._by_user.recent(users, self.neighbours)

    def item_neighbours(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Users of the ``K`` most recent interactions of each item before the cursor, most recent first.

        Returns
        -------
        tuple[Long[B, K], Bool[B, K]]
            User ids (0 where invalid) and the validity mask.
        """
        return self._by_item.recent(items, self.neighbours)

    def sampled_user_neighbours(
        self, users: torch.Tensor, k: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of up to ``k`` interactions of each user before the cursor, drawn uniformly without replacement
        from all of them (MeLON's "sample up to 10 neighbours"), most recent first; shapes as
        :meth:`user_neighbours` with ``K = k``. ``gen`` is the only source of randomness."""
        return self._by_user.sample(users, k, gen)

    def sampled_item_neighbours(
        self, items: torch.Tensor, k: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Users of up to ``k`` interactions of each item before the cursor, drawn as in
        :meth:`sampled_user_neighbours`."""
        return self._by_item.sample(items, k, gen)

    def _first_position(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """First position of each pair (users[b], items[b, c]) in the stream, or ``n_interactions`` if it never
        occurs: ``[B, C]``."""
        query = users.unsqueeze(1) * self.n_items + items  # [B, C]
        if self._pair_table is not None:
            return lookup(self._pair_table, query)
        idx = torch.searchsorted(self._pair_key, query).clamp(max=self._pair_key.shape[0] - 1)
        return torch.where(lookup(self._pair_key, idx) == query, lookup(self._pair_first, idx), self.n_interactions)
