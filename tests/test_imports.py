"""The package's import graph: no circle (counting imports deferred into functions, which only hide one), and
layers import downwards only: data -> baselines -> unifrac -> objectives -> models -> outputs -> training ->
reporting -> workflows -> cli (STYLE.md, _design_plan/architecture.md); no module imports another module's
private (underscored) name."""

from __future__ import annotations

import ast
from pathlib import Path

import aam

PACKAGE = Path(aam.__file__).parent
LAYERS = ("aam.data", "aam.baselines", "aam.unifrac", "aam.objectives", "aam.models", "aam.outputs", "aam.training",
          "aam.reporting", "aam.workflows", "aam.cli")
BELOW = {  # what each layer may import from the package besides itself (and the top-level helpers)
    "aam.data": set(),
    "aam.baselines": {"aam.data"},
    "aam.unifrac": {"aam.data"},
    "aam.objectives": {"aam.data"},
    "aam.models": {"aam.data", "aam.baselines", "aam.objectives"},
    "aam.outputs": {"aam.data", "aam.models", "aam.objectives"},
    "aam.training": {"aam.data", "aam.models", "aam.unifrac", "aam.objectives", "aam.outputs"},
    "aam.reporting": {"aam.data", "aam.models", "aam.objectives", "aam.outputs"},
}
BELOW["aam.workflows"] = set(LAYERS[:LAYERS.index("aam.workflows")])
BELOW["aam.cli"] = set(LAYERS[:LAYERS.index("aam.cli")])


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere (module level or inside functions), except under
    ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
               for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found - {module_name(path)}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle():
    assert cycles(graph()) == []


def test_the_circle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def layer(module: str) -> str | None:
    return next((name for name in LAYERS if module == name or module.startswith(name + ".")), None)


def test_layers_import_downwards_only():
    wrong = [(m, target) for m, targets in graph().items() if layer(m) for target in targets
             if layer(target) not in (None, layer(m)) and layer(target) not in BELOW[layer(m)]]
    assert wrong == []


def private_imports(path: Path) -> list[str]:
    """``module.name`` of each underscored name ``path`` imports from another package module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{node.module}.{alias.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aam")
            for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]


def test_no_module_imports_another_modules_private_name(tmp_path):
    found = {module_name(p): names for p in sorted(PACKAGE.rglob("*.py")) if (names := private_imports(p))}
    assert found == {}
    probe = tmp_path / "probe.py"
    probe.write_text("from aam.workflows.train import _csv, run_train\n")
    assert private_imports(probe) == ["aam.workflows.train._csv"]


def test_every_model_call_goes_through_forward_batch():
    """Batches reach models only through ``aam.training.forward.forward_batch`` (one place maps batch fields
    onto model arguments)."""
    direct = [module_name(p) for p in sorted(PACKAGE.rglob("*.py"))
              if "(batch.tokens, batch.asv_index" in p.read_text(encoding="utf-8")]
    assert direct == ["aam.training.forward"]
