"""The dataset card: what a prepared dataset holds, how it was made, and checksums to trust it by.

``card.json`` sits next to ``interactions.parquet``. Its keys:

- ``name`` (stored name), ``dataset`` (registry entry), ``description``, ``license``, ``citation``;
- ``users``, ``items``, ``interactions``, ``density`` (interactions / (users × items));
- ``ratios`` (the requested pre-train:validation:test percentages) and ``splits``: for each part its
  ``interactions``, ``users``, ``items`` and time range (``first_ts``/``last_ts`` unix seconds, ``first_time``/
  ``last_time`` ISO 8601 UTC);
- ``cold``: ids of the online part (validation + test) that never occur in pre-training, as in the paper's
  Table 5: ``{"users": {"online": n, "validation": {"users": n, "interactions": n}, "test": {...}}, "items":
  {...}}`` (the same shape for items, keyed ``items``);
- ``filtering``: row counts after each step (``raw``, ``deduplicated``, ``core``) and ``core_rounds``, the
  number of k-core passes;
- ``options`` (the PrepareOptions used, as JSON), ``fingerprint`` (hash of the options that shape the data
  and the inputs' sha256: equal fingerprints mean an identical preparation);
- ``inputs`` (path, size, sha256 of each raw file), ``outputs`` (sha256 of each written Parquet file);
- ``melonbench_version``, ``polars_version``, ``created`` (ISO 8601 UTC), ``card_version``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import polars as pl

from melonbench import __version__
from melonbench.data.filtering import SPLITS
from melonbench.store import paths
from melonbench.store.atomic import atomic_write_json

CARD_VERSION = 1
_HASH_CACHE = "sha256-cache.json"


def iso(ts: int | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (``None`` stays ``None``)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cached_sha256(path: Path) -> str:
    """sha256 of ``path``, remembered under ``$MELONBENCH_HOME`` by (absolute path, size, mtime).

    Raw inputs can be gigabytes; a re-run of ``prepare`` on an unchanged file must not hash it again.
    """
    path = path.resolve()
    stat = path.stat()
    cache_file = paths.home() / _HASH_CACHE
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(path))
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    digest = sha256_file(path)
    cache[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    atomic_write_json(cache_file, cache)
    return digest


def split_stats(df: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Per split: interactions, users, items and time range of a prepared frame (with a ``split`` column)."""
    stats = {}
    for part in SPLITS:
        rows = df.filter(pl.col("split") == part)
        first = rows["ts"].min() if rows.height else None
        last = rows["ts"].max() if rows.height else None
        stats[part] = {
            "interactions": rows.height,
            "users": rows["user"].n_unique(),
            "items": rows["item"].n_unique(),
            "first_ts": first,
            "last_ts": last,
            "first_time": iso(first),  # type: ignore[arg-type]
            "last_time": iso(last),  # type: ignore[arg-type]
        }
    return stats


def cold_stats(df: pl.DataFrame) -> dict[str, dict[str, Any]]:
    """Users and items of the online part (validation + test) that never occur in pre-training.

    For each of ``user`` and ``item``: the number of such ids in the whole online part, and per online part the
    number of such ids and of their interactions there.
    """
    out: dict[str, dict[str, Any]] = {}
    for col, key in (("user", "users"), ("item", "items")):
        seen = df.filter(pl.col("split") == "pretrain")[col].unique()
        cold = df.filter((pl.col("split") != "pretrain") & ~pl.col(col).is_in(seen.implode()))
        entry: dict[str, Any] = {"online": cold[col].n_unique()}
        for part in SPLITS[1:]:
            rows = cold.filter(pl.col("split") == part)
            entry[part] = {key: rows[col].n_unique(), "interactions": rows.height}
        out[key] = entry
    return out


def build_card(
    *,
    name: str,
    spec: Any,
    interactions: pl.DataFrame,
    ratios: tuple[float, float, float],
    options: dict[str, Any],
    fingerprint: str,
    inputs: list[dict[str, Any]],
    outputs: dict[str, str],
    filtering: dict[str, int],
    description: str | None = None,
) -> dict[str, Any]:
    """Assemble the card of a prepared dataset (see the module docstring for every key).

    Parameters
    ----------
    name : str
        The stored name (folder under the datasets directory).
    spec : DatasetSpec
        The registry entry that read the raw files (its name, description, licence, citation).
    interactions : pl.DataFrame
        The prepared frame: ``user``, ``item``, ``ts``, ``split``.
    ratios, options, fingerprint, inputs, outputs, filtering
        Recorded as given.
    description : str, optional
        What the data is, when the reader could tell better than the registry (the MovieLens release).
    """
    n_users = interactions["user"].n_unique()
    n_items = interactions["item"].n_unique()
    n = interactions.height
    return {
        "card_version": CARD_VERSION,
        "name": name,
        "dataset": spec.name,
        "description": description or spec.description,
        "license": spec.license,
        "citation": spec.citation,
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "density": n / (n_users * n_items) if n else 0.0,
        "ratios": list(ratios),
        "splits": split_stats(interactions),
        "cold": cold_stats(interactions),
        "filtering": filtering,
        "options": options,
        "fingerprint": fingerprint,
        "inputs": inputs,
        "outputs": outputs,
        "melonbench_version": __version__,
        "polars_version": pl.__version__,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }


def read_card(folder: Path) -> dict[str, Any] | None:
    """The card in ``folder``, or ``None`` when there is none (or it is not valid JSON)."""
    try:
        card = json.loads((folder / "card.json").read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None
