"""What dvc.yaml says each stage's code is, and what the stage's script imports: the helpers of
test_stage_deps.py (static bounds) and of the end-to-end test (the imports a real run records)."""
import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hp", "stages")  # the repository's own code; everything else is an installed dependency


def module_file(name: str) -> Path | None:
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.Module, functions: bool):
    """The import statements that run when the module is imported (functions=False: module level, in ifs and
    trys too, not under TYPE_CHECKING) or that may run at all (functions=True: function bodies too)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif _type_checking(node):
            continue
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not functions:
            continue
        else:
            todo.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path, functions: bool) -> set[str]:
    """Dotted names of the repository modules that `path` imports (see _import_nodes)."""
    names = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path)), functions):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name
    return {n for n in names if n.split(".")[0] in PACKAGES and module_file(n) is not None}


def code_closure(script: str, functions: bool) -> set[str]:
    """Repository files that module `script` imports, transitively, with the __init__.py of every package on the
    way (importing a.b.c runs a/__init__.py and a/b/__init__.py first). functions=False: what importing it
    surely runs (a lower bound of what the stage runs); True: everything it may import (an upper bound)."""
    seen, todo = set(), [script]
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            path = module_file(module)
            if path is None or module in seen:
                continue
            seen.add(module)
            todo.extend(imported_modules(path, functions))
    return {module_file(m).relative_to(ROOT).as_posix() for m in seen}


def stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> list[tuple[str, str, list[str], bool]]:
    """(stage name, module its cmd runs, deps, frozen) for every stage of dvc.yaml, foreach expanded."""
    out = []
    for name, stage in yaml.safe_load(dvc_yaml.read_text())["stages"].items():
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
             [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])], bool(stage.get("frozen")))
            for name, stage in out]


def declared_code(deps: list[str], root: Path = ROOT) -> set[str]:
    """The repository Python files a stage's deps name (a directory: every .py file under it)."""
    files = set()
    for dep in deps:
        path = root / dep
        if dep.split("/")[0] in PACKAGES:
            files.update(p.relative_to(root).as_posix() for p in ([path] if path.is_file() else path.rglob("*.py")))
    return files


def recorded_mismatches(records: Path, root: Path = ROOT) -> dict[str, tuple[list[str], list[str]]]:
    """Per stage that ran with HP_RECORD_IMPORTS=records: (imported but not in its deps, in its deps but imported by
    none of its items). A foreach stage is one definition: each item may import less than the deps name (SV's
    manifests read no ASVspoof protocol), but every file named must be imported by some item, and every file an
    item imports must be named. A stage with no record counts as importing nothing; frozen stages do not run."""
    ran, declared = {}, {}
    for name, _, deps, frozen in stages(root / "dvc.yaml"):
        if frozen:
            continue
        path = records / f"{name}.json"
        imported, named = set(json.loads(path.read_text())) if path.is_file() else set(), declared_code(deps, root)
        base = name.split("@")[0]
        missing = imported - named  # per item: what this item ran must be named for this item
        ran.setdefault(base, [set(), set()])[0].update(imported)
        ran[base][1].update(missing)
        declared.setdefault(base, set()).update(named)
    out = {}
    for base, (imported, missing) in ran.items():
        unused = declared[base] - imported
        if missing or unused:
            out[base] = (sorted(missing), sorted(unused))
    return out
