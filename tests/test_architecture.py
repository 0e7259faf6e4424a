"""Architecture fitness: the package's structure rules, checked from the source.

- no import cycle between modules of ``devvis/`` (``if TYPE_CHECKING:`` imports excluded);
- the library never imports the CLI (``devvis.cli``, ``devvis.commands``);
- no module imports another module's private names (``from devvis.x import _helper``);
- no file over 500 lines;
- no ``importlib.import_module("devvis...")`` side doors around these rules;
- test helpers (the headless browser) live with the tests, not in the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "devvis"
MAX_LINES = 500


def _modules() -> dict[str, tuple[Path, str]]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            pkg = ".".join(parts)
        else:
            pkg = ".".join(parts[:-1])
        mods[".".join(parts)] = (p, pkg)
    return mods


MODULES = _modules()


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def _owner(name: str) -> str | None:
    while name and name not in MODULES:
        if "." not in name:
            return None
        name = name.rsplit(".", 1)[0]
    return name


def _imports(name: str) -> tuple[set[str], list[str], list[str]]:
    """(modules imported, private names imported from other modules, importlib side doors)."""
    path, pkg = MODULES[name]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    edges, private, doors = set(), [], []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("devvis"):
                continue
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                if full in MODULES:
                    edges.add(full)
                    continue
                edges.add(_owner(mod) or mod)
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    private.append(f"{name} imports {alias.name} from {mod}")
        elif isinstance(node, ast.Import):
            edges.update(_owner(a.name) or a.name for a in node.names if a.name.startswith("devvis"))
        elif isinstance(node, ast.Call) and ast.unparse(node.func).endswith("import_module") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                if str(arg.value).startswith("devvis"):
                    doors.append(f"{name}: import_module({arg.value!r})")
            # a computed name: the user's own modules (models, llc data) or the CLI's subcommands;
            # the package's lazy attributes are checked by importing each of them (below)
    edges.discard(name)
    return edges, private, doors


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles() -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v][0]:
            if w not in MODULES:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in MODULES:
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_the_package():
    assert len(MODULES) > 40
    assert sum("devvis.errors" in edges for edges, _, _ in GRAPH.values()) > 20


def test_no_import_cycles():
    assert _cycles() == []


def test_library_never_imports_the_cli():
    def cli(m: str) -> bool:
        return m == "devvis.cli" or m.startswith("devvis.commands")
    bad = [f"{a} -> {b}" for a, (edges, _, _) in GRAPH.items() if not cli(a) for b in edges if cli(b)]
    assert bad == []


def test_no_private_names_across_modules():
    assert [p for _, (_, private, _) in GRAPH.items() for p in private] == []


def test_no_importlib_side_doors():
    assert [d for _, (_, _, doors) in GRAPH.items() for d in doors] == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_file_over_500_lines(name):
    n = len(MODULES[name][0].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[name][0].relative_to(PKG.parent)} has {n} lines"


def test_every_lazy_subpackage_imports_and_star_import_works():
    import devvis

    for name in devvis._LAZY:
        assert getattr(devvis, name).__name__ == f"devvis.{name}"
    namespace: dict = {}
    exec("from devvis import *", namespace)
    assert {"render", "runs", "results", "state"} <= set(namespace)


def test_browser_helper_lives_with_the_tests():
    assert not (PKG / "browser.py").exists()
