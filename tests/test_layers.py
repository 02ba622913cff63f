"""Imports run one way (DESIGN.md): cli -> report -> bench -> {theory, samplers, metrics} -> {ot, models} -> data
-> core,
with no import cycle between modules (function-level imports included: they are dependencies too)."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dpmot_bench"
LAYERS = {"cli": 6, "__main__": 6, "report": 5, "bench": 4, "theory": 3, "samplers": 3, "metrics": 3,
          "ot": 2, "models": 2, "data": 1}  # everything else at the top level is the core, layer 0


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def imports(path: Path) -> set[str]:
    """The dpmot_bench modules that ``path`` imports, resolved to modules (a name imported from a package
    that is one of its submodules counts as that submodule)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dpmot_bench"}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if not target.startswith("dpmot_bench"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (PACKAGE.parent / sub.replace(".", "/") / "__init__.py").exists() else target)
    return found


GRAPH = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_graph_is_read():
    assert "dpmot_bench.samplers.dpmot" in GRAPH["dpmot_bench.samplers.generate"]
    assert "dpmot_bench.bench.context" in GRAPH["dpmot_bench.bench.tasks"]
    assert layer("dpmot_bench.report.build") == 5 and layer("dpmot_bench.errors") == 0


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_upward_import(module):
    upward = sorted(m for m in GRAPH[module] if layer(m) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports a higher layer: {upward}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a list of modules (first = last), or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    for root in graph:
        if state.get(root):
            continue
        stack, path = [(root, iter(sorted(graph.get(root, ()))))], [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child):] + [child]
            elif not state.get(child):
                state[child] = 1
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def test_no_import_cycle():
    # a package's __init__ re-exports its modules; a module importing its own package's names from the
    # __init__ would make a cycle, which is real (import order decides whether it works)
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_the_checks_can_fail():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("dpmot_bench.report.x") > layer("dpmot_bench.bench.y")
