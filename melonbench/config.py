"""Frozen configuration dataclasses and their JSON round-trip.

Every command builds one of these from its options and hands it to one library function; the resolved config
is written next to what it produced (dataset card, checkpoint, run manifest), so a result can always be traced
to the exact settings that made it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

CoreMode = Literal["single", "iterative"]
Dedupe = Literal["first", "keep"]


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Options of ``melonbench prepare``.

    Attributes
    ----------
    inputs : tuple[Path, ...]
        Local raw files; empty means download from the registry's URL (where it has one).
    core : int
        k of the k-core filter (the paper: 20).
    core_mode : {"single", "iterative"}
        ``single``: user and item counts are both taken on the de-duplicated input and applied at once (the
        paper's wording); ``iterative``: repeated until every user and item has at least ``core``.
    dedupe : {"first", "keep"}
        ``first`` keeps the earliest (time, then input order) of repeated (user, item) pairs; ``keep`` keeps all.
    split : tuple[float, float, float] | None
        Pre-train : validation : test percentages summing to 100; ``None`` takes the dataset's default.
    force : bool
        Prepare again even if an identical preparation exists.
    name : str | None
        Name to store the dataset under (required for the generic ``csv`` reader; defaults to the registry name).
    columns : str | None
        ``csv`` reader only: ``user,item,ts`` as header names or 0-based positions.
    sha256 : str | None
        Expected sha256 of the downloaded file, overriding the registry's.
    insecure : bool
        Download without TLS certificate verification (explicit opt-in; for hosts with broken chains).
    params : tuple[tuple[str, str], ...]
        Reader-specific ``key=value`` settings (e.g. the synthetic stream's sizes and seed).
    """

    inputs: tuple[Path, ...] = ()
    core: int = 20
    core_mode: CoreMode = "single"
    dedupe: Dedupe = "first"
    split: tuple[float, float, float] | None = None
    force: bool = False
    name: str | None = None
    columns: str | None = None
    sha256: str | None = None
    insecure: bool = False
    params: tuple[tuple[str, str], ...] = ()


def to_jsonable(obj: Any) -> Any:
    """Convert a (nested) config dataclass to plain JSON types (paths as strings, tuples as lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(*parts: Any) -> str:
    """A short, stable content hash of JSON-able parts (configs, card checksums, versions)."""
    blob = json.dumps([to_jsonable(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
