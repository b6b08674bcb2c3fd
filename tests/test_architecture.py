"""The package's layers (docs/architecture.md): no import runs from a lower layer to a higher one, and no circle.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a circle that only the type checker
sees is still a circle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "melonbench"

# Bottom to top. A module may import its own layer and the layers below it.
LAYERS = {
    "melonbench": 0,  # the root __init__: the version, nothing else
    "melonbench.core": 0,
    "melonbench.store": 1,
    "melonbench.data": 2,
    "melonbench.models": 3,
    "melonbench.online": 4,
    "melonbench.strategies": 5,
    "melonbench.report": 6,
    "melonbench.pipeline": 7,
    "melonbench.cli": 8,
    "melonbench.__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The melonbench module ``name`` refers to: itself, or the package or module that holds it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every melonbench module ``module`` imports, wherever in the file the import stands."""
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c` imports the module a.b.c when c is one, else the name c of a.b
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for n in names if n.startswith("melonbench") and (t := _resolve(n)) and t != module)
    return found


def layer(module: str) -> int:
    owner = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[owner]


def test_every_module_belongs_to_a_layer():
    loose = [m for m in MODULES if not any(m == p or m.startswith(p + ".") for p in LAYERS if p != "melonbench")]
    assert loose == ["melonbench"]


def test_the_top_level_shows_the_layers_and_little_else():
    entries = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__")
    assert entries == sorted(
        ["__init__.py", "__main__.py", "cli.py", "core", "store", "data", "models", "online", "strategies", "report"]
        + ["pipeline"]
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_runs_upwards(module):
    upward = sorted(t for t in imports_of(module) if layer(t) > layer(module))
    assert upward == [], f"{module} (layer {layer(module)}) imports a higher layer: {upward}"


def test_no_module_imports_itself_back():
    graph = {m: imports_of(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                circles.append(path[path.index(t) :] + [t])
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above are only worth their green if they can go red: a planted upward import and circle."""
    fake = {
        "melonbench.online.a": "from melonbench.strategies.b import x\n",
        "melonbench.strategies.b": "if True:\n    import melonbench.online.a\n",
    }
    for name, text in fake.items():
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        monkeypatch.setitem(MODULES, name, path)
    assert imports_of("melonbench.online.a") == {"melonbench.strategies.b"}
    with pytest.raises(AssertionError, match="imports a higher layer"):
        test_no_import_runs_upwards("melonbench.online.a")
    with pytest.raises(AssertionError):
        test_no_module_imports_itself_back()


@pytest.mark.parametrize("package", sorted(m for m, p in MODULES.items() if p.name == "__init__.py"))
def test_every_package_says_what_it_owns(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text()))
    assert doc and len(doc.split()) >= 8, f"{package}/__init__.py needs a docstring that says what it owns"
