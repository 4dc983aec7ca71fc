"""Every mapping of params.yaml and of every recipe is strict: a key added, the first key taken away, or a word put
in the first number of the mapping is refused with one line naming that key, by load_params (what every stage
runs first) or by the check of every stage that declares the key in dvc.yaml (hp.stages.<stage>.check, what
the stage runs before any work). Fast: no stage does its work here."""
from __future__ import annotations

import copy

import pytest
import yaml

from helpers import ROOT_DIR
from hp.errors import ConfigError
from hp.params import load_params
from hp.stages import compact, export, finetune, manifests, prepare, pretrain, report, score, validate, warmup

CHECKS = {"pretrain": lambda task, params: pretrain.check(params), "prepare": prepare.check,
          "manifests": manifests.check, "warmup": warmup.check, "finetune": finetune.check,
          "compact": lambda task, params: compact.check(params), "score": score.check, "export": export.check,
          "report": lambda task, params: report.check(params), "validate": lambda task, params: validate.check(params)}
FILES = ["params.yaml", *sorted(p.relative_to(ROOT_DIR).as_posix() for p in (ROOT_DIR / "recipes").glob("*.yaml"))]


def declared(frozen: bool = True) -> list[tuple[str, str | None, list[str]]]:
    """(stage, task or None, the params paths it declares) for every stage of dvc.yaml, foreach expanded; the
    frozen ones (which `dvc repro` never runs: the mini front end's pretraining) only if `frozen`."""
    stages = yaml.safe_load((ROOT_DIR / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in stages.items():
        if stage.get("frozen") and not frozen:
            continue
        if "foreach" not in stage:
            out.append((name, None, stage.get("params", [])))
            continue
        for task in stage["foreach"]:
            out.append((name, task, [p.replace("${item}", task) for p in stage["do"].get("params", [])]))
    return out


def mutations(params: dict):
    """(description, mutated params, the dotted key the refusal must name) for every mapping of `params`."""
    def mappings(node, path):
        yield path, node
        for key, value in node.items():
            if isinstance(value, dict):
                yield from mappings(value, (*path, key))

    for path, node in list(mappings(params, ())):
        def at(tree):
            for key in path:
                tree = tree[key]
            return tree

        dotted = ".".join(path)
        join = (lambda key: f"{dotted}.{key}") if path else (lambda key: key)
        extra = copy.deepcopy(params)
        at(extra)["zz_unknown"] = 1
        yield f"extra key in {dotted or 'the top level'}", extra, join("zz_unknown")
        if node:
            first = next(iter(node))
            missing = copy.deepcopy(params)
            del at(missing)[first]
            yield f"{join(first)} deleted", missing, join(first)
        numbers = [k for k, v in node.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if numbers:
            wrong = copy.deepcopy(params)
            at(wrong)[numbers[0]] = "abc"
            yield f"{join(numbers[0])}: abc", wrong, join(numbers[0])


def covers(declared_path: str, key: str) -> bool:
    """Whether a stage declaring `declared_path` reads `key` (inside it, or a group holding it)."""
    return key == declared_path or key.startswith(declared_path + ".") or declared_path.startswith(key + ".")


@pytest.mark.parametrize("name", FILES)
def test_every_mapping_refuses_extra_missing_and_mistyped_keys(name, tmp_path):
    original = yaml.safe_load((ROOT_DIR / name).read_text())
    stages = declared(frozen="pretrain" in original)  # a recipe holds no pretrain group: it uses a hub model
    for stage, task, _ in stages:  # the file as it is passes every check
        CHECKS[stage](task, load_params(ROOT_DIR / name))
    failures, count = [], 0
    for what, params, key in mutations(original):
        count += 1
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            loaded = load_params(path)
        except ConfigError as e:
            if key not in str(e) or "\n" in str(e):
                failures.append(f"{what}: load_params said {e}")
            continue
        readers = [(stage, task) for stage, task, paths in stages if any(covers(p, key) for p in paths)]
        if not readers:
            failures.append(f"{what}: accepted by load_params and declared by no stage")
        for stage, task in readers:
            try:
                CHECKS[stage](task, copy.deepcopy(loaded))
            except ConfigError as e:
                if key not in str(e) or "\n" in str(e):
                    failures.append(f"{what}: {stage}@{task} said {e}")
            else:
                failures.append(f"{what}: {stage}@{task} accepted it")
    assert count > 40 and not failures, "\n".join(failures)


def test_a_skipped_warmup_still_checks_what_it_declares():
    params = load_params(ROOT_DIR / "params.yaml")
    assert params["warmup"]["cm"] == {"epochs": 0} and warmup.check("cm", params) is False
    for change, message in ((("warmup", "cm", "batch_size"), "abc"), (("finetune", "cm", "head", "heads"), "abc"),
                            (("model", "layerdrop"), "abc")):
        bad = copy.deepcopy(params)
        node = bad
        for key in change[:-1]:
            node = node[key]
        node[change[-1]] = message
        with pytest.raises(ConfigError, match=".".join(change)):
            warmup.check("cm", bad)


def test_the_mini_settings_follow_the_writer_signature():
    """Each mini corpus setting is a parameter of its writer, and each parameter is in params.yaml: a new
    parameter of the writer without a params key (or the reverse) fails here, not in a user's run."""
    import inspect

    from hp.data import synth

    params = load_params(ROOT_DIR / "params.yaml")
    for task, writer in (("sv", synth.write_sv_corpus), ("cm", synth.write_cm_corpus)):
        names = [n for n in inspect.signature(writer).parameters if n not in ("root", "workers")]
        assert sorted(params["prepare"][task]["mini"]) == sorted(names)


def test_the_stage_scripts_check_before_they_start():
    """The training and scoring scripts run the stage's check before they (re)launch processes."""
    for script in ("finetune", "score", "warmup"):
        text = (ROOT_DIR / "stages" / f"{script}.py").read_text()
        assert text.index("check(task, params)") < text.index("distributed.relaunch"), script
