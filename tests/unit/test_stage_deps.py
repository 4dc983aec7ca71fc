"""Every DVC stage's code deps in dvc.yaml lie between what its script surely imports (module-level imports,
transitively) and what it may import (function-level imports too). The exact check, the files a real run
imports, is in the end-to-end test (HP_RECORD_IMPORTS)."""
import json
import os
import subprocess
import sys

import pytest

from stage_deps import ROOT, code_closure, declared_code, recorded_mismatches, stages


@pytest.mark.parametrize("name,module,deps,frozen", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_are_bounded_by_its_imports(name, module, deps, frozen):
    surely, maybe, declared = code_closure(module, False), code_closure(module, True), declared_code(deps)
    assert not surely - declared, f"{name}: dvc.yaml misses deps {sorted(surely - declared)}"
    assert not declared - maybe, f"{name}: dvc.yaml deps the stage cannot run {sorted(declared - maybe)}"


def test_closures_follow_packages_and_tell_module_from_function_level_imports():
    surely, maybe = code_closure("hp.stages.prepare", False), code_closure("hp.stages.prepare", True)
    assert {"hp/__init__.py", "hp/stages/__init__.py", "hp/tasks/__init__.py", "hp/tasks/base.py"} <= surely
    # the task modules are imported inside get_task, the corpus writer inside SpeakerVerification.prepare
    assert "hp/tasks/sv.py" not in surely and {"hp/tasks/sv.py", "hp/data/synth/corpus.py"} <= maybe
    assert not any(f.startswith("hp/model") for f in surely)  # hp's top level is lazy: no model for prepare


def test_recorded_imports_are_the_files_a_stage_process_loaded(tmp_path):
    """HP_RECORD_IMPORTS as a stage script sees it: the files of the hp modules loaded when it exits."""
    code = "import sys; sys.argv = ['stages/prepare.py', 'sv']; import hp.stages, hp.tasks.sv"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                   env={"HP_RECORD_IMPORTS": str(tmp_path), "PATH": "/usr/bin:/bin"})
    recorded = set(json.loads((tmp_path / "prepare@sv.json").read_text()))
    assert {"hp/__init__.py", "hp/stages/__init__.py", "hp/tasks/sv.py", "hp/tasks/base.py"} <= recorded
    assert "hp/tasks/cm.py" not in recorded
    mismatches = recorded_mismatches(tmp_path)
    assert "hp/stages/prepare.py" in mismatches["prepare"][1] and "hp/tasks/cm.py" in mismatches["prepare"][1]


def test_no_stage_declares_the_runtime_group():
    """runtime (device, workers, logging, checkpoints, processes) cannot change a result: a stage that declared it,
    or all of params.yaml, would rerun when it changes. Every other group is declared by some stage."""
    import yaml

    from hp.params import RUNTIME, TOP_LEVEL

    declared = set()
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        for param in stage.get("do", stage).get("params", []):
            assert isinstance(param, str), f"a stage declares {param!r}: all of a params file, runtime included"
            declared.add(param.split(".")[0])
    assert RUNTIME not in declared and declared == set(TOP_LEVEL) - {RUNTIME}


def test_code_folders_hash_without_bytecode_caches():
    """A stage that depends on a code folder (hp/model) must get the same hash in a fresh clone, where no Python has
    written __pycache__ yet, as after a run: .dvcignore leaves the caches out."""
    folders = {dep for *_, deps, _ in stages() for dep in deps if (ROOT / dep).is_dir() and dep.startswith("hp/")}
    assert folders, "no stage depends on a code folder: this test checks nothing"
    probes = [f"{folder}/{name}" for folder in sorted(folders)
              for name in ("__pycache__/probe.cpython-311.pyc", "__pycache__/probe.txt", "probe.cpython-312.pyc")]
    env = {**os.environ, "PATH": f"{sys.prefix}/bin:{os.environ['PATH']}"}  # the suite's dvc
    result = subprocess.run(["dvc", "check-ignore", *probes], cwd=ROOT, capture_output=True, text=True, env=env)
    assert sorted(result.stdout.split()) == probes, result.stderr
