"""Renderers of a :class:`~melonbench.report.model.Report`: Markdown, LaTeX (booktabs) and rich terminal tables.

Each is a pure function of the report; none computes anything.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table as RichTable

from melonbench.report.model import Cell, Report, Table

LATEX_TEXT = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "τ": r"$\tau$",
    "²": r"$^2$",
    "Δ": r"$\Delta$",
    "–": "--",
    "…": r"\dots{}",
    "<": r"$<$",
    ">": r"$>$",
    "−": "--",
    "†": r"\dag{}",
}


def markdown(report: Report) -> str:
    """GitHub-flavoured Markdown: one section per table, notes as a list, warnings at the top."""
    out = [f"# {report.header[0]}", "", *report.header[1:]]
    if report.warnings:
        out += ["", *(f"> **Warning:** {w}" for w in report.warnings)]
    for table in report.tables:
        out += [
            "",
            f"## {table.title}",
            "",
            _md_header(table),
            "|" + "|".join(":---" if i < table.label_columns else "---:" for i in range(len(table.columns))) + "|",
        ]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
        out += ["", *(f"- {n}" for n in table.notes)]
    return "\n".join(out).rstrip() + "\n"


def _md_header(table: Table) -> str:
    names = list(table.columns)
    if table.groups:
        spans = [g for g, span in table.groups for _ in range(span)]
        names = [f"{g} {c}" if g else c for g, c in zip(spans, names, strict=True)]
    return "| " + " | ".join(names) + " |"


def _md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return f"**{text}**" if cell.mark == "best" else f"<u>{text}</u>" if cell.mark == "second" else text


def latex(report: Report) -> str:
    """A LaTeX fragment to ``\\input``: one ``table`` float per table (needs ``\\usepackage{booktabs}``, and
    ``\\usepackage{tabularx}`` when a table has columns that wrap: they share the line's width)."""
    packages = ["booktabs", *(["tabularx"] if any(t.wrap for t in report.tables) else [])]
    uses = " and ".join("\\usepackage{" + p + "}" for p in packages)
    out = [f"% {_tex(report.header[0])}", f"% Requires {uses}."]
    out += [f"% {_tex(h)}" for h in report.header[1:]]
    out += [f"% Warning: {_tex(w)}" for w in report.warnings]
    for table in report.tables:
        lead = table.label_columns
        spec = "".join(WRAPPED if i in table.wrap else "l" if i < lead else "r" for i in range(len(table.columns)))
        environment = "tabularx" if table.wrap else "tabular"
        width = "{\\linewidth}" if table.wrap else ""
        out += [
            "",
            "\\begin{table}[t]",
            "\\centering",
            "\\small",
            f"\\caption{{{_tex(table.title)}}}",
            f"\\label{{tab:{table.key}}}",
            f"\\begin{{{environment}}}{width}{{{spec}}}",
            "\\toprule",
        ]
        if table.groups:
            heads, rules, col = [], [], 1
            for label, span in table.groups:
                heads += [f"\\multicolumn{{{span}}}{{c}}{{{_tex(label)}}}"] if label else [""] * span
                if label:
                    rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
                col += span
            out += [" & ".join(heads) + " \\\\", " ".join(rules)]
        out += [" & ".join(_tex(c) for c in table.columns) + " \\\\", "\\midrule"]
        out += [" & ".join(_tex_cell(c, i in table.wrap) for i, c in enumerate(row)) + " \\\\" for row in table.rows]
        out += ["\\bottomrule", f"\\end{{{environment}}}"]
        if table.notes:
            out += ["", "\\par\\smallskip\\footnotesize", *(f"{_tex(n)}\\par" for n in table.notes)]
        out += ["\\end{table}"]
    return "\n".join(out) + "\n"


# A column that takes its share of the line's width and wraps its text, ragged right (tabularx loads array).
WRAPPED = ">{\\raggedright\\arraybackslash}X"


def _tex(text: str) -> str:
    return "".join(LATEX_TEXT.get(ch, ch) for ch in text)


def _tex_cell(cell: Cell, wrapped: bool = False) -> str:
    # A wrapped cell holds an order ("A > B (4/5) > C"): its lines break after a ">" or between the words of a
    # name, never at a name's hyphen ("MeLON-" / "I") nor before a ">".
    if wrapped:
        names = cell.text.split(" > ")
        text = "~$>$ ".join(" ".join(f"\\mbox{{{_tex(w)}}}" for w in name.split(" ")) for name in names)
    else:
        text = _tex(cell.text)
    return f"\\textbf{{{text}}}" if cell.mark == "best" else f"\\underline{{{text}}}" if cell.mark == "second" else text


def terminal(report: Report, console: Console) -> None:
    """Print the report as rich tables (best bold, second underlined), warnings in yellow."""
    for line in report.header:
        console.print(line, highlight=False)
    for table in report.tables:
        rich = RichTable(title=table.title, caption="\n".join(table.notes), caption_justify="left")
        spans = [g for g, span in table.groups for _ in range(span)] if table.groups else [""] * len(table.columns)
        lead = table.label_columns
        for i, (group, name) in enumerate(zip(spans, table.columns, strict=True)):
            rich.add_column(f"{group}\n{name}" if group else name, justify="left" if i < lead else "right")
        for row in table.rows:
            rich.add_row(*(_rich_cell(c) for c in row))
        console.print(rich)
    for warning in report.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


def _rich_cell(cell: Cell) -> str:
    text = cell.text.replace("[", "\\[")
    return f"[bold]{text}[/]" if cell.mark == "best" else f"[underline]{text}[/]" if cell.mark == "second" else text
