"""The package's imports run one way: no circle among its modules, counting imports inside functions and those
only for type checking (an import circle closed by an import inside a function is still a circle)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules() -> dict[str, Path]:
    """Every module of the package as installed (`ticketsearch.X.Y` -> its file), by the setuptools mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config["package-dir"]
    out: dict[str, Path] = {}
    for pkg in config["packages"]:
        folder = ROOT / dirs.get(pkg, dirs["ticketsearch"] + pkg.removeprefix("ticketsearch").replace(".", "/"))
        for f in folder.glob("*.py"):
            out[pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"] = f
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `name` imports, anywhere in its file."""
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            wanted = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            wanted = [a.name for a in node.names]
        else:
            continue
        for w in wanted:
            while w and w not in known:
                w = w.rsplit(".", 1)[0] if "." in w else ""
            if w and w != name:
                out.add(w)
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    mods = modules()
    assert len(mods) > 60 and "ticketsearch.pipeline.engine" in mods and "ticketsearch.index_data.store" in mods
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    assert "ticketsearch.index_data.store" in graph["ticketsearch.pipeline.engine"]  # the walk sees imports
    assert circles(graph) == []


def test_the_circle_finder_finds_one() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_sql_lives_in_the_store() -> None:
    """SQL runs on a store's connection only inside index_data/ (the store's methods)."""
    outside = set()
    for folder in ("ticketsearch", "retrieval", "rerank", "service", "scripts"):
        for f in (ROOT / folder).rglob("*.py"):
            text = f.read_text()
            if ".con.execute(" in text or ".con.sql(" in text or ".con.register(" in text:
                outside.add(str(f.relative_to(ROOT)))
    assert outside == set()


def test_the_package_folder_links_each_mapped_folder() -> None:
    """ticketsearch/X is a link to the card's folder that setuptools installs as ticketsearch.X, so that the tree
    reads as installed (mypy -p ticketsearch, an IDE); a link missing or pointing elsewhere fails here."""
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    mapped = {pkg.removeprefix("ticketsearch."): folder for pkg, folder in dirs.items() if pkg != "ticketsearch"}
    assert set(mapped) == {"index_data", "retrieval", "rerank", "service"}
    for name, folder in mapped.items():
        link = ROOT / "ticketsearch" / name
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), name


def test_an_import_inside_a_function_says_what_it_defers() -> None:
    """An import inside a function stays only where it defers a heavy dependency, named on its line (or the line
    above): `# deferred: torch`. Anything else belongs at the module's top."""
    silent = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    said = lines[node.lineno - 1] + lines[node.lineno - 2]
                    if "# deferred:" not in said:
                        silent.append(f"{name}:{node.lineno}")
    assert silent == []
