"""``melonbench prepare``: raw files in, one chronological interaction stream plus its card out.

Steps, in order: resolve the inputs (``--input`` files, else the registry's download, else the entry's hint on
where to get the file) → read them with the registry's reader (a lazy frame of raw ``user``, ``item``, ``ts``)
→ collect it with the streaming engine, turning string ids into integer codes on the way so the raw text is
never held twice → stable chronological order (ts, then input order) → de-duplicate → k-core → dense int32 ids
in order of first appearance → split by ratios → write ``interactions.parquet``, ``users.parquet``,
``items.parquet`` and ``card.json``.

Sorting comes first because de-duplication keeps the earliest (ts, input order) occurrence and ids follow the
final order; the k-core filter does not depend on order, so the result is the same as sorting last.

Everything is written into a staging folder that replaces ``datasets_dir()/<name>`` only once complete: an
error or Ctrl-C leaves no partial dataset and keeps an older preparation intact. A run whose inputs (by
sha256) and data-shaping options equal those recorded in the existing card does nothing unless ``force``.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console

from melonbench.core.config import PrepareOptions, config_hash, to_jsonable
from melonbench.core.errors import ChecksumError, DataError, MelonbenchError
from melonbench.data import filtering
from melonbench.data.card import build_card, cached_sha256, read_card, sha256_file
from melonbench.data.context import ReadContext
from melonbench.store import paths
from melonbench.store.atomic import atomic_write_json, staging_dir

PIPELINE_VERSION = 1  # bump when a change to the steps makes older preparations differ from new ones
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_NOT_SHAPING = ("inputs", "force", "name", "sha256", "insecure")


@dataclass(frozen=True)
class PreparedInfo:
    """What ``prepare_dataset`` did.

    Attributes
    ----------
    name : str
        The stored name (``options.name`` or the registry name).
    path : Path
        The dataset's folder, ``datasets_dir()/<name>``.
    card : dict
        Its ``card.json``.
    reused : bool
        True when an identical preparation already existed and nothing was done.
    """

    name: str
    path: Path
    card: dict[str, Any]
    reused: bool


def prepare_dataset(name: str, options: PrepareOptions, console: Console | None = None) -> PreparedInfo:
    """Prepare registry dataset ``name`` with ``options`` (see the module docstring for the steps).

    Parameters
    ----------
    name : str
        A key of the dataset registry.
    options : PrepareOptions
        The command-line options; ``options.name`` overrides the stored name (required for ``csv``).
    console : rich.console.Console, optional
        Where progress and the summary go; ``None`` prints nothing.

    Returns
    -------
    PreparedInfo

    Raises
    ------
    UnknownNameError
        ``name`` is not in the registry (the message suggests the closest).
    DataError
        Missing or unreadable input, nothing left after filtering, an empty split.
    """
    from melonbench.data.registry import get_dataset

    console = console or Console(quiet=True)
    spec = get_dataset(name)
    stored = _stored_name(spec.name, options)
    expected_sha256 = _expected_sha256(spec, options)
    paths.writable_home()  # before any download or reading
    target = paths.datasets_dir() / stored
    ratios = tuple(float(r) for r in (options.split or spec.split))
    files = _resolve_inputs(spec, options, console)
    with console.status("checksumming inputs"):
        inputs = [{"path": str(p), "size": p.stat().st_size, "sha256": cached_sha256(p)} for p in files]
    if options.inputs and expected_sha256 is not None and inputs[0]["sha256"] != expected_sha256:
        raise ChecksumError(
            f"{files[0]} has sha256 {inputs[0]['sha256']}, but --sha256 expects {expected_sha256}: "
            "is it the file you meant?"
        )
    shaping = _shaping_options(options, ratios)
    fingerprint = config_hash(PIPELINE_VERSION, spec.name, shaping, [i["sha256"] for i in inputs])

    old = read_card(target)
    if old is not None and old.get("fingerprint") == fingerprint and (target / "interactions.parquet").is_file():
        if not options.force:
            console.print(f"{stored} is already prepared with these inputs and options ({target}); --force redoes it")
            return PreparedInfo(stored, target, old, reused=True)
    replacing = None if old is None else _describe_change(old, shaping, inputs)

    with tempfile.TemporaryDirectory(dir=_scratch_root(), prefix="prepare-") as work:
        raw, vocab, described = _read(spec, files, options, Path(work), console)
    with console.status("filtering, ordering and splitting"):
        result, maps, counts = _pipeline(raw, options, ratios)
    del raw
    maps = {col: _decode(m, vocab.get(col)) for col, m in maps.items()}
    if replacing is not None:  # only now: bad settings or input fail above, and the old preparation stays
        console.print(f"replacing the previous preparation of {stored}: {replacing}")

    with console.status(f"writing {target}"):
        with staging_dir(target) as tmp:
            outputs = {}
            for file_name, frame in (
                ("interactions.parquet", result),
                ("users.parquet", maps["user"]),
                ("items.parquet", maps["item"]),
            ):
                frame.write_parquet(tmp / file_name)
                outputs[file_name] = sha256_file(tmp / file_name)
            card = build_card(
                name=stored,
                spec=spec,
                description="; ".join(dict.fromkeys(described)) or spec.description,
                interactions=result,
                ratios=ratios,  # type: ignore[arg-type]
                options=to_jsonable(options),
                fingerprint=fingerprint,
                inputs=inputs,
                outputs=outputs,
                filtering=counts,
            )
            atomic_write_json(tmp / "card.json", card)
    console.print(
        f"prepared {stored}: {card['users']:,} users, {card['items']:,} items, "
        f"{card['interactions']:,} interactions -> {target}"
    )
    return PreparedInfo(stored, target, card, reused=False)


def _stored_name(registry_name: str, options: PrepareOptions) -> str:
    """The folder name to store under; also refuses options no reader could honour."""
    from melonbench.data.registry import DATASETS

    if options.core < 1:
        raise MelonbenchError(f"--core must be at least 1 (1 keeps every user and item), got {options.core}")
    if registry_name == "csv" and not options.name:
        raise MelonbenchError("the csv reader needs --name NAME: the name later commands will know the dataset by")
    stored = options.name or registry_name
    if not _NAME.fullmatch(stored):
        raise MelonbenchError(
            f"--name '{stored}' is not a valid dataset name: use letters, digits, '.', '_' or '-' (at most 100)"
        )
    if stored != registry_name and stored in DATASETS:
        # it would replace that dataset's own preparation (the synthetic default is prepared on demand under it)
        raise MelonbenchError(
            f"--name '{stored}' is the name of a registered dataset; store {registry_name} data under another name"
        )
    return stored


def _expected_sha256(spec: Any, options: PrepareOptions) -> str | None:
    """``--sha256`` checked for form, and for having a file to check: the download or the one ``--input``."""
    if options.sha256 is None:
        return None
    expected = options.sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise MelonbenchError(f"--sha256 must be 64 hexadecimal digits, got '{options.sha256}'")
    if options.inputs and len(options.inputs) != 1:
        raise MelonbenchError(f"--sha256 checks one input file, but {len(options.inputs)} --input files were given")
    if not options.inputs and not spec.urls:
        raise MelonbenchError(f"--sha256 checks a downloaded or --input file, and {spec.name} has neither")
    return expected


def _resolve_inputs(spec: Any, options: PrepareOptions, console: Console) -> list[Path]:
    if options.inputs:
        files = [Path(p).expanduser() for p in options.inputs]
        for p in files:
            if not p.is_file():
                raise DataError(f"input file not found: {p}")
        return files
    if spec.urls:
        from melonbench.data.download import fetch

        return [fetch(spec, paths.downloads_dir(), options.sha256, insecure=options.insecure, console=console)]
    if spec.generated:
        return []
    raise DataError(f"{spec.name} has no download: give --input PATH, {spec.input_hint}")


def _shaping_options(options: PrepareOptions, ratios: tuple[float, ...]) -> dict[str, Any]:
    """The options that decide the prepared data (not where inputs lie, nor how they were fetched)."""
    shaping = {k: v for k, v in to_jsonable(options).items() if k not in _NOT_SHAPING}
    shaping["split"] = list(ratios)
    return shaping


def _describe_change(old: dict[str, Any], shaping: dict[str, Any], inputs: list[dict[str, Any]]) -> str:
    before = dict(old.get("options") or {})
    before["split"] = old.get("ratios", before.get("split"))
    changes = [
        f"{key} {_show(before.get(key))} -> {_show(value)}"
        for key, value in shaping.items()
        if before.get(key) != value
    ]
    if [i.get("sha256") for i in old.get("inputs", [])] != [i["sha256"] for i in inputs]:
        changes.append("input files changed")
    return ", ".join(changes) or "different melonbench pipeline version"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ":".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if value else "[]"
    return str(value)


def _scratch_root() -> Path:
    root = paths.home()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _read(
    spec: Any, files: list[Path], options: PrepareOptions, workdir: Path, console: Console
) -> tuple[pl.DataFrame, dict[str, pl.Series], list[str]]:
    """Run the reader and collect ``user``, ``item``, ``ts`` in input order, string ids as UInt32 codes.

    Returns the frame, for each column that held strings the code -> raw id table (a Series indexed by
    code), and what the reader said the data is (``ReadContext.described``). Casting to a private
    ``Categorical`` inside the streaming plan means the raw id text is only ever stored once, as the category
    list, however long the input.
    """
    with console.status(f"reading {spec.name} input"):
        source = f"{spec.name} input {', '.join(p.name for p in files)}" if files else f"{spec.name} reader"
        ctx = ReadContext(workdir=workdir, options=options)
        lf = _checked(lambda: spec.reader(files, ctx), source)
        schema = _checked(lf.collect_schema, source)
        missing = [c for c in ("user", "item", "ts") if c not in schema]
        if missing:
            raise DataError(f"the {spec.name} reader produced no {', '.join(missing)} column")
        encoded = [
            pl.col(c).cast(pl.Categorical(pl.Categories.random())) if schema[c] == pl.String else pl.col(c)
            for c in ("user", "item")
        ]
        lf = lf.select(*encoded, pl.col("ts").cast(pl.Int64))
        df = _checked(lambda: lf.collect(engine="streaming"), source)
    vocab = {}
    for col in ("user", "item"):
        if isinstance(df.schema[col], pl.Categorical):
            vocab[col] = df[col].dtype.categories.to_series()  # type: ignore[union-attr]
            df = df.with_columns(pl.col(col).to_physical())
    if df.height == 0:
        raise DataError(f"no interactions found in the {spec.name} input")
    return df, vocab, ctx.described


def _checked(step: Any, source: str) -> Any:
    """Run ``step``; a polars error (a bad value deep in a file) becomes a one-line DataError naming ``source``."""
    from melonbench.data.readers import polars_errors

    with polars_errors(source):
        return step()


def _pipeline(
    raw: pl.DataFrame, options: PrepareOptions, ratios: tuple[float, ...]
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame], dict[str, int]]:
    deduped = filtering.dedupe(raw, options.dedupe)
    cored, rounds = filtering.k_core(deduped, options.core, options.core_mode)
    if cored.height == 0:
        best = deduped.select(pl.min_horizontal(pl.len().over("user"), pl.len().over("item")).max()).item()
        raise DataError(
            f"nothing survives the {options.core}-core filter: none of the {deduped.height:,} de-duplicated "
            f"interactions has both a user and an item with {options.core} interactions; try --core {best} or smaller"
        )
    dense, users, items = filtering.dense_ids(cored)
    result = filtering.assign_split(dense, ratios)
    counts = {"raw": raw.height, "deduplicated": deduped.height, "core": cored.height, "core_rounds": rounds}
    return result, {"user": users, "item": items}, counts


def _decode(mapping: pl.DataFrame, vocab: pl.Series | None) -> pl.DataFrame:
    """Turn a mapping's integer codes back into the raw ids they stand for."""
    if vocab is None:
        return mapping
    return mapping.with_columns(vocab.gather(mapping["raw"]).alias("raw"))
