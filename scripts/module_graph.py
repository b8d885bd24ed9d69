"""Figures of the package's import graph, read from the source with `ast` (nothing is imported).

    python scripts/module_graph.py            # dipod_trl
    python scripts/module_graph.py --files    # one node per file instead of per top-level module or package

A node is a top-level module of `dipod_trl/` or one of its subpackages (with `--files`: every `.py` file).
An arrow A -> B is an import of B written in A. "load-time" arrows are the imports Python runs when A is
imported (module level); "all" arrows add the imports inside functions, which run only when the function is
called. Imports under `if TYPE_CHECKING:` (annotations only, never run) are not arrows. Layers: the length of
the longest load-time import chain, plus one (a module that imports nothing of the package is on layer 1).
Cycles: strongly connected groups of more than one node.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, name: str, is_package: bool) -> list[tuple[str, bool]]:
    """(imported module, at load time) for every import in the file, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, load_time: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                continue  # annotations only: never run
            elif isinstance(child, ast.Import):
                found.extend((alias.name, load_time) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = here[: len(here) - child.level + 1] if child.level else []
                target = ".".join(base + ([child.module] if child.module else []))
                # `from . import x` may import the submodule x: count it when it is one.
                found.append((target, load_time))
                found.extend((f"{target}.{alias.name}", load_time) for alias in child.names)
            else:
                visit(child, load_time)

    visit(tree, True)
    return found


def graph(package: str, per_file: bool) -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    package_dir = ROOT / package
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}

    def node_of(module: str) -> str | None:
        """The node a module belongs to, or None outside the package (or not a module of it)."""
        parts = module.split(".")
        while parts and ".".join(parts) not in files:
            parts.pop()  # `from .x import name`: name is an attribute, x the module
        if not parts or parts[0] != package:
            return None
        if per_file or len(parts) == 1:
            return ".".join(parts)
        return ".".join(parts[:2])

    nodes = {node_of(m) for m in files if m != package} - {None}
    load: dict[str, set[str]] = {n: set() for n in nodes}
    every: dict[str, set[str]] = {n: set() for n in nodes}
    for module, path in files.items():
        source = node_of(module)
        if source is None or module == package:
            continue
        for target, load_time in imports_of(path, module, path.name == "__init__.py"):
            target_node = node_of(target)
            if target_node is None or target_node == source or target_node == package:
                continue
            every[source].add(target_node)
            if load_time:
                load[source].add(target_node)
    return nodes, load, every


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(nodes):
        if v not in index:
            connect(v)
    return groups


def layers(nodes: set[str], edges: dict[str, set[str]]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def layer(v: str, seen: tuple[str, ...] = ()) -> int:
        if v not in depth:
            below = [layer(w, seen + (v,)) for w in edges[v] if w not in seen]
            depth[v] = 1 + max(below, default=0)
        return depth[v]

    for v in nodes:
        layer(v)
    return depth


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="dipod_trl")
    parser.add_argument("--files", action="store_true", help="one node per file")
    parser.add_argument("--layers", action="store_true", help="also list the nodes of each layer")
    args = parser.parse_args(argv)
    nodes, load, every = graph(args.package, args.files)
    top = sorted(p for p in (ROOT / args.package).iterdir()
                 if (p.suffix == ".py" and p.name not in ("__init__.py", "__main__.py"))
                 or (p.is_dir() and (p / "__init__.py").exists()))
    depth = layers(nodes, load)
    print(f"top level of {args.package}/: {len(top)} modules and packages "
          f"({sum(p.suffix == '.py' for p in top)} modules, {sum(p.is_dir() for p in top)} packages)")
    print(f"nodes: {len(nodes)}")
    print(f"import arrows: {sum(map(len, load.values()))} at load time, {sum(map(len, every.values()))} in all")
    print(f"layers (load-time imports): {max(depth.values())}")
    for label, edges in (("load-time", load), ("all imports", every)):
        cycles = strongly_connected(nodes, edges)
        print(f"cycles ({label}): {len(cycles)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cycles))
    if args.layers:
        for level in range(1, max(depth.values()) + 1):
            print(f"  {level}: {', '.join(sorted(n for n in nodes if depth[n] == level))}")


if __name__ == "__main__":
    main()
