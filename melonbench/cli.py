"""The ``melonbench`` command line: each command turns its options into one config and calls one library function."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from melonbench import __version__
from melonbench.config import PrepareOptions
from melonbench.errors import MelonbenchError

app = typer.Typer(
    name="melonbench",
    help="Benchmark online update strategies for recommender systems (MeLON, AAAI 2022, and its baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"melonbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Benchmark online update strategies for recommender systems."""


def _parse_split(split: str | None) -> tuple[float, float, float] | None:
    if split is None:
        return None
    parts = split.split(":")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise MelonbenchError(f"--split must look like 80:2:18, got '{split}'") from None
    if len(values) != 3:
        raise MelonbenchError(f"--split needs three parts (pre-train:validation:test), got '{split}'")
    if any(v < 0 for v in values) or abs(sum(values) - 100.0) > 1e-9:
        raise MelonbenchError(f"--split parts must be non-negative and sum to 100, got '{split}' (sum {sum(values):g})")
    return values  # type: ignore[return-value]


def _parse_params(items: list[str] | None) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MelonbenchError(f"--set expects key=value, got '{item}'")
        out.append((key.strip(), value.strip()))
    return tuple(out)


@app.command()
def prepare(
    dataset: Annotated[str, typer.Argument(help="Registry name (see `melonbench datasets`).")] = "synthetic",
    input: Annotated[
        Optional[list[Path]], typer.Option("--input", "-i", help="Local raw file(s) instead of downloading.")
    ] = None,
    core: Annotated[int, typer.Option(help="k of the k-core filter on users and items.")] = 20,
    core_mode: Annotated[
        str, typer.Option(help="single: both counts on the de-duplicated input, applied once; iterative: to a fixpoint.")
    ] = "single",
    dedupe: Annotated[str, typer.Option(help="first: keep the earliest repeat of a (user, item); keep: keep all.")] = "first",
    split: Annotated[
        Optional[str], typer.Option(help="pre-train:validation:test percentages, e.g. 80:2:18 (default: the dataset's).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Prepare again even if an identical preparation exists.")] = False,
    name: Annotated[Optional[str], typer.Option(help="Store under this name (required for `csv`).")] = None,
    columns: Annotated[
        Optional[str], typer.Option(help="csv only: user,item,ts as header names or 0-based positions.")
    ] = None,
    sha256: Annotated[Optional[str], typer.Option(help="Expected sha256 of the download (overrides the registry).")] = None,
    insecure: Annotated[bool, typer.Option(help="Download without TLS verification (explicit opt-in).")] = False,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Reader setting key=value (e.g. synthetic: users=2000).")
    ] = None,
) -> None:
    """Download (or read --input), filter, order by time, split, and write Parquet plus a dataset card."""
    if core_mode not in ("single", "iterative"):
        raise MelonbenchError(f"--core-mode must be 'single' or 'iterative', got '{core_mode}'")
    if dedupe not in ("first", "keep"):
        raise MelonbenchError(f"--dedupe must be 'first' or 'keep', got '{dedupe}'")
    options = PrepareOptions(
        inputs=tuple(input or ()),
        core=core,
        core_mode=core_mode,  # type: ignore[arg-type]
        dedupe=dedupe,  # type: ignore[arg-type]
        split=_parse_split(split),
        force=force,
        name=name,
        columns=columns,
        sha256=sha256,
        insecure=insecure,
        params=_parse_params(set_),
    )
    from melonbench.data.prepare import prepare_dataset

    prepare_dataset(dataset, options, console=console)


@app.command()
def datasets(
    show: Annotated[Optional[str], typer.Option(help="Print the card of this prepared dataset.")] = None,
) -> None:
    """List the dataset registry and what is prepared locally."""
    from melonbench.data.catalog import print_card, print_catalog

    if show is None:
        print_catalog(Console())
    else:
        print_card(show, Console())


def main() -> None:
    """Console entry point: known errors become one red line and exit code 2.

    Set ``MELONBENCH_DEBUG=1`` to get the full traceback instead. Usage errors are Typer's own (exit code 2).
    """
    try:
        app()
    except MelonbenchError as exc:
        if os.environ.get("MELONBENCH_DEBUG"):
            raise
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
