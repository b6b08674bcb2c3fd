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

from melonbench.core.errors import MelonbenchError

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


HASH_OMITS_DEFAULT = {"hash_omits_default": True}
"""Field metadata: :func:`config_hash` leaves the field out while it has its default, so that adding a field to a
config keeps the hash (hence every cached checkpoint and run id) of everything made before it existed."""


def to_jsonable(obj: Any, *, hashing: bool = False) -> Any:
    """Convert a (nested) config dataclass to plain JSON types (paths as strings, tuples as lists).

    With ``hashing``, fields marked :data:`HASH_OMITS_DEFAULT` that hold their default are left out.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name), hashing=hashing)
            for f in dataclasses.fields(obj)
            if not (hashing and f.metadata.get("hash_omits_default") and getattr(obj, f.name) == f.default)
        }
    if isinstance(obj, (tuple, list)):
        return [to_jsonable(v, hashing=hashing) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, hashing=hashing) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(*parts: Any) -> str:
    """A short, stable content hash of JSON-able parts (configs, card checksums, versions)."""
    blob = json.dumps([to_jsonable(p, hashing=True) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _at_least(option: str, value: int, low: int, why: str = "") -> None:
    if value < low:
        raise MelonbenchError(f"{option} must be at least {low}, got {value}" + (f" ({why})" if why else ""))


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Offline pre-training of a recommender on the pre-training part.

    Defaults follow the paper (Adam, lr 1e-3, batch 256, 100 epochs, embedding size 64) except the weight decay:
    the kept epoch is the one with the best validation HR@5 (sampled protocol), with early stopping after
    ``patience`` epochs without improvement. The test part is never looked at.

    Weight decay defaults to 0, not the paper's 1e-3: applied as Adam's L2 term it reaches every row of the
    embedding tables at every step, and Adam's normalisation turns it into a step of about ``lr`` towards zero
    for rows the batch does not touch, so the N(0, 0.01²) embeddings collapse (measured on the synthetic stream:
    validation HR@5 0.207 with 1e-3 against 0.387 with 0; on Grocery a median |user embedding| of 3e-7).
    ``--weight-decay 1e-3`` gives the literal setting.

    ``window`` is the ``recent-pop`` reference's W (interactions counted); every other model ignores it. It is left
    out of the hash at its default, so checkpoints and runs made before it existed keep their keys.
    """

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 256
    patience: int = 10
    dim: int = 64
    window: int = dataclasses.field(default=256, metadata=HASH_OMITS_DEFAULT)

    def __post_init__(self) -> None:
        # At least one epoch: the protocol replays a pre-trained model, and an untrained one stored as a checkpoint
        # (and its runs stored as normal runs) would be taken for one.
        _at_least("--epochs", self.epochs, 1, "the online replay starts from a pre-trained model")
        _at_least("--patience", self.patience, 1)
        _at_least("pre-training batch size", self.batch_size, 1)
        _at_least("embedding size", self.dim, 1)
        if not self.lr > 0:  # also refuses NaN
            raise MelonbenchError(f"--lr must be positive, got {self.lr}")
        if not self.weight_decay >= 0:
            raise MelonbenchError(f"--weight-decay must be zero or positive, got {self.weight_decay}")


Protocol = Literal["leakfree", "paper"]
Split = Literal["validation", "test"]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One online replay: (dataset, model, strategy, seed) plus the protocol settings.

    A run's identity (its run id, and what ``report`` compares to tell two runs apart) is made of exactly the
    fields that can change its stored results: every field except those in :data:`RESULT_NEUTRAL`
    (``checkpoint_every``: how often state is saved, never what is computed; ``warmup``: which batches the timing
    summaries leave out, a flag beside the results). The device enters as its resolved type (``auto`` on a GPU
    machine is ``cuda``), the strategy's settings as its resolved config (``lr=0.01`` and ``lr=1e-2`` are one run),
    and the code version is added. ``capture_lr_every`` stays in: a capturing run stores more (the ``lr/``
    matrices and an ``lr_rank`` column) and runs its step outside CUDA graphs. Where results are written and how
    progress is shown are not fields at all. Changing a result-neutral field of a finished run gives "already
    complete"; of an interrupted one, resumes it.

    Attributes
    ----------
    dataset, model, strategy : str
        Registry names.
    seed : int
        Seeds the pre-training, the strategy, the training negatives and (per dataset) the evaluation negatives.
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    split : {"validation", "test"}
        ``validation`` replays the validation part only; ``test`` replays validation then test (the stream goes
        on), and reports the test batches. Every batch is stored with its split.
    protocol : {"leakfree", "paper"}
        ``paper`` reproduces the published setting's leaks on purpose (see docs/protocol.md).
    batch_size : int
        Online batch size (the paper: 256).
    n_negatives : int
        Sampled-protocol negatives per interaction (the paper: 99).
    ks : tuple[int, ...]
        Cut-offs for HR@k and NDCG@k.
    warmup : int
        The first ``warmup`` batches of the run are flagged as timing warm-up (kept, and left out of the timing
        medians). Fixed when the run starts: a resumed run keeps its flags, and the first ``warmup`` batches
        after each resume are left out of the medians too (see docs/protocol.md, "Timing").
    strategy_params : tuple[tuple[str, str], ...]
        ``--set key=value`` overrides of the strategy's config fields.
    tuned : tuple[tuple[str, str], ...] | None
        Settings chosen on the validation part by ``melonbench tune`` (``run --tuned``), applied after
        ``strategy_params``; ``()`` for a strategy with nothing to tune; ``None`` when the run is not tuned. Part
        of the run's identity like any ``--set``; the manifest's ``tuning`` says which tuning chose them.
    pretrain : PretrainConfig
        Used when the checkpoint must be made on demand (it is part of the checkpoint's hash).
    checkpoint_every : int
        Batches between resumable state checkpoints.
    capture_lr_every : int
        Store the learning-rate matrix W of every N-th batch (0: never) with its numerical rank, for strategies
        that can report it (``results/<run_id>/lr/``).
    """

    dataset: str = "synthetic"
    model: str = "bpr"
    strategy: str = "default"
    seed: int = 0
    device: str = "auto"
    split: Split = "test"
    protocol: Protocol = "leakfree"
    batch_size: int = 256
    n_negatives: int = 99
    ks: tuple[int, ...] = (5, 10, 20)
    warmup: int = 3
    strategy_params: tuple[tuple[str, str], ...] = ()
    pretrain: PretrainConfig = PretrainConfig()
    checkpoint_every: int = 50
    capture_lr_every: int = 0
    # None (not tuned) stays out of the hash: a run made before `tuned` existed keeps its id
    tuned: tuple[tuple[str, str], ...] | None = dataclasses.field(default=None, metadata=HASH_OMITS_DEFAULT)

    def settings(self) -> tuple[tuple[str, str], ...]:
        """Every strategy setting of the run: the ``--set`` overrides, then the tuned values."""
        return self.strategy_params + (self.tuned or ())

    def __post_init__(self) -> None:
        _at_least("--batch-size", self.batch_size, 1)
        _at_least("--negatives", self.n_negatives, 1)
        if not self.ks or min(self.ks) < 1:
            raise MelonbenchError(f"every cut-off k must be at least 1, got {', '.join(map(str, self.ks)) or 'none'}")
        _at_least("--warmup", self.warmup, 0)
        _at_least("--checkpoint-every", self.checkpoint_every, 1)
        _at_least("--capture-lr", self.capture_lr_every, 0, "0 turns capture off")


RESULT_NEUTRAL = ("checkpoint_every", "warmup")
"""RunConfig fields that cannot change a run's stored results, left out of its identity (see ``RunConfig``)."""


def run_identity(config: dict[str, Any]) -> dict[str, Any]:
    """A run's JSON config (``to_jsonable(RunConfig)``, or a manifest's ``config``) without the result-neutral
    fields: two runs with equal identities (and code versions) compute the same results."""
    return {k: v for k, v in config.items() if k not in RESULT_NEUTRAL}
