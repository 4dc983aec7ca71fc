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
    assert "hp.model.wavlm" in graph["hp.model.io"] and "hp.tasks.base" in graph["hp.tasks.sv"]  # read as meant
    assert [sorted(c) for c in circles(graph)] == []
    # the circles broken in issue 34 would be caught: hp.model.wavlm's save() importing hp.model.io back, and a
    # task forwarding its report section to hp.reporting.sv_section, which asked hp.tasks for the task
    graph["hp.model.wavlm"].add("hp.model.io")
    graph["hp.tasks.sv"].add("hp.reporting.sv_section")
    graph["hp.reporting.sv_section"].add("hp.tasks")
    assert sorted(map(sorted, circles(graph))) == [["hp.model.io", "hp.model.wavlm"],
                                                   ["hp.reporting.sv_section", "hp.tasks", "hp.tasks.sv"]]
