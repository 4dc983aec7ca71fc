"""Every DVC stage depends on exactly the code it runs: the hp modules its script imports, transitively (imports
inside functions included, package __init__ files too), are the Python files its dvc.yaml deps name."""
import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hp", "stages")  # the repository's own code; everything else is an installed dependency


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Dotted names of the repository modules that `path` imports anywhere in its body."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name
    return {n for n in names if n.split(".")[0] in PACKAGES and module_file(n) is not None}


def code_closure(script: str) -> set[str]:
    """Repository files that running module `script` executes: its imports, transitively, with the __init__.py of
    every package on the way (importing a.b.c runs a/__init__.py and a/b/__init__.py first)."""
    seen, todo = set(), [script]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            path = module_file(module)
            if path is None or module in seen:
                continue
            seen.add(module)
            todo.extend(imported_modules(path))
    return {module_file(m).relative_to(ROOT).as_posix() for m in seen}


def stages() -> list[tuple[str, str, list[str]]]:
    """(stage name, module its cmd runs, deps) for every stage of dvc.yaml, foreach expanded."""
    out = []
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" in stage:
            items = stage["foreach"]
            pairs = items.items() if isinstance(items, dict) else ((item, item) for item in items)
            for key, item in pairs:
                text = yaml.safe_dump(stage["do"]).replace("${key}", str(key))
                text = re.sub(r"\$\{item(?:\.(\w+))?\}", lambda m: str(item[m[1]] if m[1] else item), text)
                out.append((f"{name}@{key}", yaml.safe_load(text)))
        else:
            out.append((name, stage))
    return [(name, re.match(r"python -m ([\w.]+)", stage["cmd"])[1],
             [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]) for name, stage in out]


def declared_code(deps: list[str]) -> set[str]:
    files = set()
    for dep in deps:
        path = ROOT / dep
        if dep.split("/")[0] in PACKAGES:
            files.update(p.relative_to(ROOT).as_posix() for p in ([path] if path.is_file() else path.rglob("*.py")))
    return files


@pytest.mark.parametrize("name,module,deps", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_are_the_code_it_runs(name, module, deps):
    runs, declared = code_closure(module), declared_code(deps)
    assert not runs - declared, f"{name}: dvc.yaml misses deps {sorted(runs - declared)}"
    assert not declared - runs, f"{name}: dvc.yaml deps the stage does not run {sorted(declared - runs)}"


def test_closure_follows_function_level_imports_and_packages(tmp_path, monkeypatch):
    """The analysis itself: a lazy import inside a function counts, and so does every package's __init__.py."""
    assert "hp/__init__.py" in code_closure("hp.data.synth") and "hp/data/__init__.py" in code_closure("hp.data.synth")
    assert "hp/data/synth.py" in code_closure("hp.pretrain")
