"""The package's import graph: no cycles, and the model/generation API stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import jax_musicvae

PACKAGE = Path(jax_musicvae.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """jax_musicvae modules imported anywhere in the file, except under TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
        for node in ast.walk(guard)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("jax_musicvae")}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in runtime_imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "jax_musicvae.models" in graph and graph["jax_musicvae.generate"]
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_generation_api_does_not_import_the_dataset_builder() -> None:
    code = (
        "import sys, jax_musicvae.generate, jax_musicvae.models; "
        "heavy = {'jax_musicvae.data.dataset', 'jax_musicvae.data.corpus', 'grain', 'tqdm'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
