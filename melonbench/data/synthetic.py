"""The built-in synthetic drifting stream (``synthetic``): the default dataset, generated, never downloaded.

A seeded simulation of a year of shopping, shaped like the paper's Amazon Grocery after a 20-core filter
(about 1.2k users, 1.4k items and 30k interactions with the defaults) and built so that a model frozen after
pre-training has something real to miss: user interests over latent topics drift (some users jump at a change
point, others drift slowly), topics rise and fall globally, and new items are released during the stream with
a burst of popularity. ``docs/synthetic.md`` gives the model with its equations.

Only uniform doubles are drawn from numpy's PCG64 generator; every other distribution is an explicit
transform of them, so the output does not depend on numpy's distribution algorithms (which NEP 19 allows to
change between releases). The same config gives the same frame everywhere, unless last-bit differences of
``exp``/``log``/``pow`` between CPUs happen to meet a draw within ~1e-16 of a category boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from melonbench.core.errors import DataError, UnknownNameError
from melonbench.core.registry import lookup
from melonbench.data.context import ReadContext

DAY = 86_400
KINDS = ("stable", "abrupt", "gradual")  # user_kind codes 0, 1, 2
_REDRAW_ROUNDS = 200


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic stream; the defaults give a Grocery-sized dataset after ``prepare``.

    Sizes are those of the simulation, before de-duplication and the 20-core filter: most simulated users are
    light (as in real logs) and are removed by the filter, which is what lets the surviving items keep a
    power-law popularity. With the defaults and the single-pass 20-core filter about 1.2k users, 1.4k items and
    30k interactions remain (measured figures in ``docs/synthetic.md``); the iterative 20-core leaves nothing,
    as the surviving users sit just above 20 interactions (use a smaller ``--core`` with ``iterative``).

    Attributes
    ----------
    seed : int
        Seed of the PCG64 generator (default 0).
    users : int
        Simulated users (default 18500; about 6% of them reach 20 interactions).
    items : int
        Items over the whole span, catalogue and new (default 8000).
    topics : int
        Latent topics K (default 20); item ``i`` belongs to topic ``i mod K``.
    days : int
        Length of the stream in days (default 365).
    start : int
        Unix time of the first day, 00:00 UTC (default 1514764800 = 2018-01-01).
    resolution : int
        Timestamps are floored to a multiple of this many seconds (default 86400: whole days, as in Amazon,
        so ties are common; 1 keeps seconds).
    min_activity : float
        Pareto scale: the fewest interactions a user draws (default 5.0, as in a 5-core log).
    activity_shape : float
        Pareto shape of the number of interactions per user (default 2.0; smaller = heavier tail).
    max_activity : int
        Cap on one user's interactions (default 100).
    initial_users : float
        Fraction of users active from the first day (default 0.35); the others join uniformly later and stay,
        so activity grows over the stream as on a growing platform.
    last_join : float
        Latest join time as a fraction of the span (default 0.9).
    interest_scale : float
        Standard deviation sigma of the topic logits of a user's interests (default 3.0; larger = fewer topics
        per user).
    abrupt_fraction : float
        Fraction of users whose interests jump to a new mixture at one change point (default 0.3).
    gradual_fraction : float
        Fraction of users whose interests move slowly from one mixture to another over their active time
        (default 0.4). The remaining users keep their interests.
    trend : float
        Standard deviation of each topic's global log-popularity change over the span (default 1.0; 0 = none).
    zipf : float
        Exponent s of the within-topic popularity ``rank ** -s`` (default 1.2).
    new_item_fraction : float
        Fraction of items released during the stream rather than present from the start (default 0.7).
    boost : float
        Launch boost of a new item (default 60.0): ``age`` days after release its popularity is its Zipf weight
        times ``1 + boost * exp(-age / boost_days)``.
    boost_days : float
        Time constant in days of the decay of the launch boost (default 30.0).
    """

    seed: int = 0
    users: int = 18_500
    items: int = 8_000
    topics: int = 20
    days: int = 365
    start: int = 1_514_764_800
    resolution: int = DAY
    min_activity: float = 5.0
    activity_shape: float = 2.0
    max_activity: int = 100
    initial_users: float = 0.35
    last_join: float = 0.9
    interest_scale: float = 3.0
    abrupt_fraction: float = 0.3
    gradual_fraction: float = 0.4
    trend: float = 1.0
    zipf: float = 1.2
    new_item_fraction: float = 0.7
    boost: float = 60.0
    boost_days: float = 30.0

    def __post_init__(self) -> None:
        rules = (
            ("users", self.users >= 1, "users >= 1"),
            ("items", self.items >= self.topics, "items >= topics"),
            ("topics", self.topics >= 1, "topics >= 1"),
            ("days", self.days >= 1, "days >= 1"),
            ("start", self.start >= 0, "start >= 0"),
            ("resolution", self.resolution >= 1, "resolution >= 1"),
            ("min_activity", self.min_activity >= 1, "min_activity >= 1"),
            ("activity_shape", self.activity_shape > 0, "activity_shape > 0"),
            ("max_activity", 1 <= self.max_activity < self.items, "1 <= max_activity < items"),
            ("initial_users", 0 <= self.initial_users <= 1, "0 <= initial_users <= 1"),
            ("last_join", 0 <= self.last_join < 1, "0 <= last_join < 1"),
            ("interest_scale", self.interest_scale >= 0, "interest_scale >= 0"),
            ("abrupt_fraction", 0 <= self.abrupt_fraction <= 1, "0 <= abrupt_fraction <= 1"),
            (
                "gradual_fraction",
                0 <= self.gradual_fraction <= 1 - self.abrupt_fraction,
                "0 <= gradual_fraction <= 1 - abrupt_fraction",
            ),
            ("trend", self.trend >= 0, "trend >= 0"),
            ("zipf", self.zipf >= 0, "zipf >= 0"),
            ("new_item_fraction", 0 <= self.new_item_fraction <= 1, "0 <= new_item_fraction <= 1"),
            ("boost", self.boost >= 0, "boost >= 0"),
            ("boost_days", self.boost_days > 0, "boost_days > 0"),
        )
        broken = [f"{name}={getattr(self, name)!r} (needs {rule})" for name, ok, rule in rules if not ok]
        if broken:
            raise DataError(f"Invalid synthetic setting: {'; '.join(broken)}")


@dataclasses.dataclass(frozen=True, eq=False)
class Simulation:
    """A generated stream with the latent truth that produced it (for tests and analysis).

    Attributes
    ----------
    interactions : pl.DataFrame
        Columns ``user``, ``item``, ``ts`` (Int64, unix seconds), sorted by time.
    item_topic : np.ndarray
        ``(items,)`` topic of each item.
    item_release : np.ndarray
        ``(items,)`` unix time from which each item can be interacted with (``start`` for catalogue items).
    user_kind : np.ndarray
        ``(users,)`` index into :data:`KINDS` (0 stable, 1 abrupt, 2 gradual).
    user_join : np.ndarray
        ``(users,)`` unix time of each user's first possible interaction.
    user_change : np.ndarray
        ``(users,)`` unix time of an abrupt user's change point; -1 for other users.
    topic_trend : np.ndarray
        ``(topics,)`` change of each topic's log-popularity from the first to the last day.
    """

    interactions: pl.DataFrame
    item_topic: np.ndarray
    item_release: np.ndarray
    user_kind: np.ndarray
    user_join: np.ndarray
    user_change: np.ndarray
    topic_trend: np.ndarray


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal draws by Box-Muller from uniforms (see the module docstring for why)."""
    radius = np.sqrt(-2.0 * np.log(1.0 - rng.random(shape)))
    return radius * np.cos(2.0 * np.pi * rng.random(shape))


@dataclasses.dataclass(frozen=True, eq=False)
class _Catalogue:
    """Items: ``topic`` per item, and a ``(days, items)`` popularity table flattened into ``cum_weight``.

    Columns of the table are the items in ``by_topic`` order, so topic ``z`` owns columns
    ``block_start[z] : block_start[z] + block_len[z]`` of every day's row.
    """

    topic: np.ndarray
    by_topic: np.ndarray
    block_start: np.ndarray
    block_len: np.ndarray
    release_day: np.ndarray
    cum_weight: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class _Population:
    """Users: drift ``kind``, ``join`` time and active ``life`` (seconds), ``change`` point, interest logits."""

    activity: np.ndarray
    join: np.ndarray
    life: np.ndarray
    kind: np.ndarray
    change: np.ndarray
    before: np.ndarray
    after: np.ndarray


def _catalogue(rng: np.random.Generator, c: SyntheticConfig) -> _Catalogue:
    """Topic ``i mod K``, a random Zipf rank within the topic, a release day and launch boost for new items."""
    topic = np.arange(c.items) % c.topics
    by_topic = np.lexsort((rng.random(c.items), topic))
    block_len = np.bincount(topic, minlength=c.topics)
    block_start = np.concatenate(([0], np.cumsum(block_len)[:-1]))
    rank = np.empty(c.items, dtype=np.int64)
    rank[by_topic] = np.arange(c.items) - np.repeat(block_start, block_len) + 1
    # The head item of every topic is a catalogue item, so every topic has something to offer on day 0.
    is_new = (rng.random(c.items) < c.new_item_fraction) & (rank > 1)
    release_day = np.where(is_new, np.floor(rng.random(c.items) * c.days), 0).astype(np.int64)
    age = np.arange(c.days)[:, None] - release_day[by_topic][None, :]
    boost = 1.0 + c.boost * is_new[by_topic] * np.exp(-np.maximum(age, 0) / c.boost_days)
    weight = np.where(age >= 0, rank[by_topic].astype(np.float64) ** -c.zipf * boost, 0.0)
    return _Catalogue(topic, by_topic, block_start, block_len, release_day, np.cumsum(weight.ravel()))


def _population(rng: np.random.Generator, c: SyntheticConfig) -> _Population:
    """Pareto activity, join time, exactly ``round(fraction * users)`` users of each drift kind, interests."""
    span = float(c.days * DAY)
    pareto = c.min_activity * (1.0 - rng.random(c.users)) ** (-1.0 / c.activity_shape)
    activity = np.minimum(c.max_activity, np.floor(pareto)).astype(np.int64)
    late = rng.random(c.users) >= c.initial_users
    join = np.where(late, rng.random(c.users) * c.last_join * span, 0.0)
    life = span - join
    kind = np.zeros(c.users, dtype=np.int8)
    shuffled = np.argsort(rng.random(c.users), kind="stable")
    n_abrupt, n_gradual = round(c.abrupt_fraction * c.users), round(c.gradual_fraction * c.users)
    kind[shuffled[:n_abrupt]] = KINDS.index("abrupt")
    kind[shuffled[n_abrupt : n_abrupt + n_gradual]] = KINDS.index("gradual")
    change = join + rng.random(c.users) * life
    before = c.interest_scale * _normal(rng, (c.users, c.topics))
    after = c.interest_scale * _normal(rng, (c.users, c.topics))
    return _Population(activity, join, life, kind, change, before, after)


def _draw_items(
    rng: np.random.Generator,
    user: np.ndarray,
    t: np.ndarray,
    people: _Population,
    items: _Catalogue,
    slope: np.ndarray,
    c: SyntheticConfig,
) -> np.ndarray:
    """For events (``user``, time ``t`` in seconds from the start): a topic from the user's interests at ``t``
    and the topic trends, then an item of that topic by its popularity on that day."""
    span = float(c.days * DAY)
    progress = np.select(
        [people.kind[user] == KINDS.index("abrupt"), people.kind[user] == KINDS.index("gradual")],
        [(t >= people.change[user]).astype(np.float64), (t - people.join[user]) / people.life[user]],
        0.0,
    )
    logits = (1.0 - progress)[:, None] * people.before[user] + progress[:, None] * people.after[user]
    logits += (t / span - 0.5)[:, None] * slope[None, :]
    cum = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
    z = np.minimum((cum <= (rng.random(user.size) * cum[:, -1])[:, None]).sum(axis=1), c.topics - 1)
    # One searchsorted over the flattened (day, item) table draws every event within its (day, topic) block.
    row = np.minimum((t // DAY).astype(np.int64), c.days - 1) * c.items
    first, last = row + items.block_start[z], row + items.block_start[z] + items.block_len[z] - 1
    low = np.where(first > 0, items.cum_weight[np.maximum(first - 1, 0)], 0.0)
    target = low + rng.random(user.size) * (items.cum_weight[last] - low)
    col = np.minimum(np.searchsorted(items.cum_weight, target, side="right"), last) - row
    return items.by_topic[col]


def simulate(config: SyntheticConfig) -> Simulation:
    """Generate the stream of ``config`` together with its latent truth.

    Parameters
    ----------
    config : SyntheticConfig
        Sizes, drift, popularity and seed.

    Returns
    -------
    Simulation
        The interactions (sorted by time, no repeated user-item pair) and the latent variables behind them.
    """
    c = config
    rng = np.random.default_rng(c.seed)
    items = _catalogue(rng, c)
    people = _population(rng, c)
    slope = c.trend * _normal(rng, (c.topics,))

    # Each user's events are uniform over [join, end of span]; kept in time order from here on.
    user = np.repeat(np.arange(c.users), people.activity)
    t = people.join[user] + rng.random(user.size) * people.life[user]
    in_time = np.argsort(t, kind="stable")
    user, t = user[in_time], t[in_time]
    item = _draw_items(rng, user, t, people, items, slope, c)
    # A user never takes the same item twice: later repeats (in time) are redrawn, and dropped if they persist.
    # Only the events of users who just had a repeat can hold a new one, so later rounds look at those alone.
    rows = np.arange(user.size)
    for _ in range(_REDRAW_ROUNDS):
        repeat = rows[_later_repeats(user[rows], item[rows], c.items)]
        if repeat.size == 0:
            break
        item[repeat] = _draw_items(rng, user[repeat], t[repeat], people, items, slope, c)
        rows = np.flatnonzero(np.isin(user, user[repeat]))
    keep = np.ones(user.size, dtype=bool)
    keep[rows[_later_repeats(user[rows], item[rows], c.items)]] = False

    ts = c.start + (np.floor(t[keep] / c.resolution) * c.resolution).astype(np.int64)
    frame = pl.DataFrame(
        {"user": user[keep], "item": item[keep], "ts": ts},
        schema={"user": pl.Int64, "item": pl.Int64, "ts": pl.Int64},
    )
    abrupt = people.kind == KINDS.index("abrupt")
    return Simulation(
        interactions=frame,
        item_topic=items.topic,
        item_release=c.start + items.release_day * DAY,
        user_kind=people.kind,
        user_join=c.start + np.floor(people.join).astype(np.int64),
        user_change=np.where(abrupt, c.start + np.floor(people.change).astype(np.int64), -1),
        topic_trend=slope,
    )


def _later_repeats(user: np.ndarray, item: np.ndarray, n_items: int) -> np.ndarray:
    """Indices of events (in time order) whose (user, item) pair already occurred at a lower index."""
    pair = user * n_items + item
    order = np.argsort(pair, kind="stable")
    same = pair[order][1:] == pair[order][:-1]
    return order[1:][same]


def generate(config: SyntheticConfig) -> pl.DataFrame:
    """The interactions of the synthetic stream.

    Parameters
    ----------
    config : SyntheticConfig
        Sizes, drift, popularity and seed.

    Returns
    -------
    pl.DataFrame
        Columns ``user``, ``item``, ``ts`` (Int64; ``ts`` in unix seconds), sorted by ``ts``; no user-item pair
        occurs twice. Identical for identical configs.
    """
    return simulate(config).interactions


def config_from_params(params: Sequence[tuple[str, str]]) -> SyntheticConfig:
    """Build a :class:`SyntheticConfig` from ``--set key=value`` strings.

    Raises
    ------
    DataError
        For an unknown key (naming the valid ones), a value of the wrong type, or a value out of range.
    """
    fields = {f.name: f for f in dataclasses.fields(SyntheticConfig)}
    values: dict[str, int | float] = {}
    for key, raw in params:
        try:
            field = lookup("synthetic setting", key, fields)
        except UnknownNameError as err:
            raise DataError(str(err)) from None
        integer = field.type in ("int", int)
        try:
            values[key] = int(raw) if integer else float(raw)
        except ValueError:
            wanted = "an integer" if integer else "a number"
            raise DataError(f"Synthetic setting {key} needs {wanted}, got '{raw}'") from None
    return SyntheticConfig(**values)


def read(paths: Sequence[Path], ctx: ReadContext) -> pl.LazyFrame:
    """The registry's reader for ``synthetic``: generate the stream from ``--set key=value`` settings.

    Parameters
    ----------
    paths : Sequence[Path]
        Must be empty: the stream is generated, not read.
    ctx : ReadContext
        Its ``options.params`` holds the ``--set`` pairs, mapped onto :class:`SyntheticConfig` fields.

    Returns
    -------
    pl.LazyFrame
        ``user``, ``item``, ``ts`` (Int64), sorted by ``ts``.

    Raises
    ------
    DataError
        For any ``--input``, an unknown setting, or a bad value.
    """
    if paths:
        keys = ", ".join(f.name for f in dataclasses.fields(SyntheticConfig))
        raise DataError(f"synthetic is generated and takes no --input; change it with --set key=value ({keys})")
    return generate(config_from_params(ctx.options.params)).lazy()
