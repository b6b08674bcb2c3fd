"""``melonbench datasets``: the registry with what is prepared locally, and one dataset's card as a table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from melonbench.data.card import read_card
from melonbench.data.filtering import SPLITS
from melonbench.data.store import load_card, prepared_names
from melonbench.store import paths


def print_catalog(console: Console) -> None:
    """Print every registry entry (description, default split) and every prepared dataset (counts, date).

    A prepared dataset stored under its own name (``csv --name NAME``) gets a row of its own, its source entry
    shown in the description column.
    """
    from melonbench.data.registry import DATASETS

    cards = {name: read_card(paths.datasets_dir() / name) for name in prepared_names()}
    table = Table(title="melonbench datasets", title_justify="left")
    for column, justify in (("name", "left"), ("description", "left"), ("split %", "left"), ("prepared", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name, spec in DATASETS.items():
        table.add_row(name, spec.description, _ratios(spec.split), _prepared(cards.pop(name, None)))
    for name, card in cards.items():
        source = f"prepared from '{card['dataset']}'" if card else ""
        table.add_row(name, source, _ratios(card.get("ratios", ())) if card else "", _prepared(card))
    console.print(table)


def print_card(name: str, console: Console) -> None:
    """Print the card of prepared dataset ``name`` as a table; raises NotPreparedError when there is none."""
    card = load_card(name)
    console.print(card_table(card))


def card_table(card: dict[str, Any]) -> Table:
    """The card as a two-column rich table (field, value)."""
    table = Table(title=f"dataset card: {card['name']}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("registry entry", str(card["dataset"]))
    table.add_row("description", str(card.get("description", "")))
    table.add_row("users / items", f"{card['users']:,} / {card['items']:,}")
    table.add_row("interactions", f"{card['interactions']:,} (density {card['density']:.3%})")
    table.add_row("split % requested", _ratios(card["ratios"]))
    for part in SPLITS:
        s = card["splits"][part]
        table.add_row(
            part,
            f"{s['interactions']:,} interactions, {s['users']:,} users, {s['items']:,} items; "
            f"{s['first_time']} .. {s['last_time']} ({s['first_ts']} .. {s['last_ts']})",
        )
    for key, label in (("users", "cold users (online)"), ("items", "new items (online)")):
        cold = card["cold"][key]
        table.add_row(
            label,
            f"{cold['online']:,} {key} absent from pre-training: "
            + "; ".join(
                f"{part} {cold[part][key]:,} {key}, {cold[part]['interactions']:,} interactions" for part in SPLITS[1:]
            ),
        )
    f = card["filtering"]
    table.add_row(
        "filtering",
        f"{f['raw']:,} raw -> {f['deduplicated']:,} de-duplicated -> {f['core']:,} after k-core "
        f"({f['core_rounds']} passes)",
    )
    opts = card["options"]
    table.add_row(
        "options",
        f"core {opts['core']} ({opts['core_mode']}), dedupe {opts['dedupe']}"
        + (f", columns {opts['columns']}" if opts.get("columns") else "")
        + (f", settings {', '.join('='.join(p) for p in opts['params'])}" if opts.get("params") else ""),
    )
    for entry in card["inputs"]:
        table.add_row("input", f"{entry['path']} ({entry['size']:,} bytes) sha256 {entry['sha256']}")
    for file_name, digest in card["outputs"].items():
        table.add_row("output", f"{file_name} sha256 {digest}")
    table.add_row("created", f"{card['created']} by melonbench {card['melonbench_version']}")
    table.add_row("licence", str(card.get("license", "")))
    table.add_row("citation", str(card.get("citation", "")))
    return table


def _ratios(ratios: Any) -> str:
    return ":".join(f"{float(r):g}" for r in ratios)


def _prepared(card: dict[str, Any] | None) -> str:
    if not card:
        return ""
    return (
        f"{card['users']:,} users, {card['items']:,} items, {card['interactions']:,} interactions "
        f"({card['created'][:10]})"
    )
