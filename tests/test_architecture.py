"""The layer rule: a layer imports only layers below it, and no module imports itself back
through others (imports inside functions count; ``if TYPE_CHECKING:`` blocks do not)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "churn_assets"
# Lowest first. definitions.py and policies.py merge the layers; the CLI drives the result.
RANK = {"core": 0, "source": 1, "sql_models": 2, "training": 3, "evaluation": 4, "scoring": 5,
        "monitoring": 6, "automation": 7, "definitions": 8, "policies": 8, "cli": 9}


def _module(path: Path) -> str:
    parts = ["churn_assets", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in _runtime_nodes(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("churn_assets"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    targets.append(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets += [a.name for a in node.names if a.name.startswith("churn_assets")]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "definitions"


def test_every_module_belongs_to_a_layer():
    assert {_layer(m) for m in import_graph()} <= set(RANK)


def test_no_layer_imports_a_higher_one():
    wrong = [
        f"{module} ({_layer(module)}) imports {target} ({_layer(target)})"
        for module, targets in import_graph().items()
        for target in targets
        if RANK[_layer(target)] > RANK[_layer(module)]
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_there_is_no_import_circle():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, circles


def test_the_checks_would_see_a_violation(tmp_path, monkeypatch):
    # The rule is only worth something if it fires: a core module reaching up into training.
    fake = tmp_path / "churn_assets"
    (fake / "core").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "core" / "low.py").write_text("def f():\n    from churn_assets.training.high import g\n")
    (fake / "training" / "high.py").write_text("from churn_assets.core.low import f\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    graph = import_graph()
    assert graph["churn_assets.core.low"] == {"churn_assets.training.high"}
    try:
        test_no_layer_imports_a_higher_one()
    except AssertionError as error:
        assert "core.low (core) imports churn_assets.training.high (training)" in str(error)
    else:
        raise AssertionError("the layer rule did not fire")
    try:
        test_there_is_no_import_circle()
    except AssertionError as error:
        assert "churn_assets.core.low" in str(error) and "churn_assets.training.high" in str(error)
    else:
        raise AssertionError("the circle check did not fire")
