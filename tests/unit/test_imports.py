"""hp's modules import one another without circles (ARCHITECTURE: stages -> tasks -> training/evaluation ->
model/data, arrows pointing down)."""
from pathlib import Path

from stage_deps import ROOT, imported_modules

def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the hp modules it imports anywhere (function bodies too; `from a.b import c` names a.b, and a.b.c
    when c is a module). Python's import of a package before its submodules is not an arrow: a package's
    __init__ re-exporting its submodules would otherwise close a circle with each of them."""
    graph = {}
    for path in sorted((ROOT / "hp").rglob("*.py")):
        name = module_name(path)
        graph[name] = {target for target in imported_modules(path, functions=True)
                       if target != name}
    known = set(graph)
    return {name: {t if t in known else t.rsplit(".", 1)[0] for t in targets} for name, targets in graph.items()}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while not component or w != v:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_circles_are_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    graph = import_graph()
    assert "hp.model.frontend" in graph["hp.model.io"] and "hp.tasks.base" in graph["hp.tasks.sv"]  # read as meant
    assert [sorted(c) for c in circles(graph)] == []
    # the circles broken in issue 34 would be caught: hp.model.frontend's save() importing hp.model.io back, and a
    # task forwarding its report section to hp.reporting.sv_section, which asked hp.tasks for the task
    graph["hp.model.frontend"].add("hp.model.io")
    graph["hp.tasks.sv"].add("hp.reporting.sv_section")
    graph["hp.reporting.sv_section"].add("hp.tasks")
    assert sorted(map(sorted, circles(graph))) == [["hp.model.frontend", "hp.model.io"],
                                                   ["hp.reporting.sv_section", "hp.tasks", "hp.tasks.sv"]]


# hp's packages from the top down (ARCHITECTURE: stages -> tasks -> training/evaluation -> model/data): a module
# imports only from its own package or from a lower layer, so the role folders read as a map of who uses whom.
LAYERS = (
    ("hp.__main__", "hp.stages", "hp.benchmarks"),  # entry points: a DVC stage, the CLI, the benchmarks
    ("hp.reporting", "hp.deploy"),  # what reads a finished run: the report and the sweep, export and the CLI
    ("hp.tasks",),  # what differs between SV and CM, and the network both train
    ("hp.training",),
    ("hp.params",),  # params.yaml read into typed configs
    ("hp.evaluation", "hp.heads"),
    ("hp.model", "hp.data"),
    ("hp.measure", "hp.utils", "hp.version"),
    ("hp.errors",),  # the one-line failures every layer raises; it imports nothing
)


def layer(module: str) -> int:
    for depth, packages in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in packages):
            return depth
    raise AssertionError(f"{module}: in no layer of LAYERS (add it where it belongs)")


def package(module: str) -> str:
    return next(p for packages in LAYERS for p in packages if module == p or module.startswith(p + "."))


def upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() if a != "hp" for b in targets
                  if b != "hp" and package(a) != package(b) and layer(b) <= layer(a))


def test_imports_point_down_the_layers():
    graph = import_graph()
    assert "hp.tasks.task_model" in graph["hp.stages.finetune"]  # read as meant
    assert upward(graph) == []
    graph["hp.training.loop"].add("hp.tasks.task_model")  # the arrow a runtime import of TaskModel would add
    graph["hp.model.io"].add("hp.data.audio")  # a peer in the same layer: not down, so refused too
    assert upward(graph) == ["hp.model.io -> hp.data.audio", "hp.training.loop -> hp.tasks.task_model"]


def test_one_name_per_class():
    """The code says Frontend and FrontendConfig; transformers' names WavLM and WavLMConfig are aliases at the
    package's face only (hp, hp.model), for users."""
    import ast

    import hp

    assert hp.WavLM is hp.Frontend and hp.WavLMConfig is hp.FrontendConfig
    faces = {ROOT / "hp" / "__init__.py", ROOT / "hp" / "model" / "__init__.py"}
    used = []
    for path in sorted((ROOT / "hp").rglob("*.py")) + sorted((ROOT / "stages").rglob("*.py")):
        if path in faces:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.id] if isinstance(node, ast.Name) else [a.asname or a.name for a in node.names]
                     if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hp") else [])
            used += [f"{path.relative_to(ROOT)}: {n}" for n in names if n in ("WavLM", "WavLMConfig")]
    assert used == []
