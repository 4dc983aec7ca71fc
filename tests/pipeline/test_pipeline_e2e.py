"""The DVC pipeline end to end in a throw-away git repository at a size where both tasks learn; then, on the
suite's smallest reference run, the README's next commands as a new user types them in a new shell (`dvc exp run
-S ...`, `dvc exp show`, `dvc metrics diff`, plots, `python -m hp.reporting.sweep`)."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hp.data.interop import read_trial_scores
from hp.evaluation import metrics
from hp.evaluation.metrics import CM_C_FA, CM_C_MISS, CM_P_TARGET
from pipeline_repo import ROOT, learning_cm, learning_sv, make_repo, run, small_params
from stage_deps import recorded_mismatches

def readme_commands() -> list[str]:
    """What the README tells a user to type after `make repro`: the block that starts by activating the
    environment (exp run, exp show, metrics diff, plots) and the sweep report's `python -m hp.reporting.sweep`,
    verbatim."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```\n(.*?)```", text, flags=re.S)
    block = next(b for b in blocks if "dvc exp run -S target_sparsity" in b)
    first = block.strip().splitlines()
    sweep = [line for b in blocks if b != block for line in b.splitlines()
             if line.startswith("python -m hp.reporting.sweep")]
    assert first[0].startswith(". .venv/bin/activate") and len(sweep) == 1
    return first + sweep


def new_shell_env() -> dict:
    """A new user's shell: no virtual environment on PATH (the README's own `. .venv/bin/activate` adds it)."""
    venv = Path(sys.prefix).resolve()
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p and not Path(p).resolve().is_relative_to(venv)]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": os.pathsep.join(path), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="runs the README's commands in the suite's virtualenv")
def test_dvc_repro_on_a_learning_size_corpus(tmp_path, monkeypatch):
    params = learning_cm(learning_sv(small_params(yaml.safe_load((ROOT / "params.yaml").read_text()))))
    tolerance = {task: params["finetune"][task]["freeze_tolerance"] for task in ("sv", "cm")}
    repo = make_repo(tmp_path, params)
    monkeypatch.setenv("HP_RECORD_IMPORTS", str(tmp_path / "imports"))  # each stage lists the files it imported
    run(["dvc", "repro"], repo)
    monkeypatch.delenv("HP_RECORD_IMPORTS")
    # every stage depends on exactly the code it ran: (imported, not in deps; in deps, imported by no item)
    assert recorded_mismatches(tmp_path / "imports", repo) == {}
    for task in ("sv", "cm"):
        m = json.loads((repo / "metrics" / f"{task}.json").read_text())
        assert m["target_sparsity"] == 0.7
        assert m["params_compact"] < m["params_dense"]
        # the mini defaults freeze the structure once it is within freeze_tolerance of the target (params.yaml),
        # and compaction realises the frozen (deterministic) structure exactly
        assert abs(m["achieved_sparsity"] - 0.7) <= tolerance[task] + 1e-9
        trained = json.loads((repo / "metrics" / task / "finetune.json").read_text())
        assert trained["layerdrop"] == 0.0 and trained["peak_lr"] > 0
    assert (repo / "data" / "sv" / "manifests" / "kaldi" / "train" / "wav.scp").is_file()
    check_sv_scores(repo)
    check_cm_scores(repo)
    check_report(repo / "reports")
    check_exports(repo, tmp_path)
    assert (repo / "dvc.lock").is_file()
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    # the runtime group can change no result, and no stage declares it: changing it reruns nothing
    changed = yaml.safe_load((repo / "params.yaml").read_text())
    changed["runtime"].update(log_every=1, num_workers=1, checkpoint_every=3, device="cpu")
    (repo / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    assert "up to date" in run(["dvc", "status"], repo)
    run(["git", "checkout", "params.yaml"], repo)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.skipif(sys.prefix == sys.base_prefix, reason="runs the README's commands in the suite's virtualenv")
def test_the_readme_commands_in_a_new_shell(reference_run, tmp_path):
    """After `make repro`, the README's next commands as a new user types them, on a copy of the suite's reference
    run (the smallest DAG: what is checked here is that the commands work, not what the model learns)."""
    repo = tmp_path / "repo"
    shutil.copytree(reference_run, repo, symlinks=True)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    baseline = {task: json.loads((repo / "metrics" / f"{task}.json").read_text()) for task in ("sv", "cm")}
    # a new shell, in the checkout that `make repro` set up: .venv is there, not on PATH, and nothing finds torch
    (repo / ".venv").symlink_to(Path(sys.prefix))
    env = new_shell_env()
    bare = subprocess.run(["bash", "-c", "python -c 'import torch' || python3 -c 'import torch'"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert bare.returncode != 0, "the shell is not new: a python on PATH imports torch without the venv"
    script = "set -e\n" + "\n".join(readme_commands()) + "\n"
    result = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"the README's commands failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    for task in ("sv", "cm"):  # the experiment's results are in the workspace: every stage reran at 0.5
        m = json.loads((repo / "metrics" / f"{task}.json").read_text())
        # a few steps of training leave the structure short of either target; a smaller target keeps more
        assert m["target_sparsity"] == 0.5 and m["params_compact"] > baseline[task]["params_compact"]
    assert "metrics/sv.json" in result.stdout  # dvc metrics diff listed what changed
    assert re.search(r"^ *\S+ +sv +0\.5 params ", result.stdout, flags=re.M)  # the --table line of the experiment
    page = (repo / "dvc_plots" / "index.html").read_text()  # drawn in .dvc/offline-plots.html: Vega inline
    assert "vegaEmbed(" in page and not re.search(r"<script[^>]*\bsrc=", page)
    table = pd.read_csv(repo / "reports" / "sweep" / "sweep.csv")  # the experiment beside the committed baseline
    assert sorted(zip(table["task"], table["target_sparsity"])) == [("cm", 0.5), ("cm", 0.7), ("sv", 0.5),
                                                                    ("sv", 0.7)]

    activate = f". {repo / '.venv' / 'bin' / 'activate'} && "
    shown = json.loads(run(["bash", "-c", activate + "dvc exp show --json"], repo, env))
    text = json.dumps(shown)
    assert '"target_sparsity": 0.5' in text and '"target_sparsity": 0.7' in text
    # the declared plots render the DET and training curves against the last commit
    plots = json.loads(run(["bash", "-c", activate + "dvc plots diff HEAD --json"], repo, env))["data"]
    assert set(plots) >= {"Miss vs false-alarm rate (linear axes; the report draws the DET on normal-deviate axes)",
                          "Task loss", "Sparsity (expected, deterministic, target)", "Lagrange multipliers",
                          "Learning rate"}
    for name, rendered in plots.items():
        if name.startswith("Pretraining"):  # the frozen pretrain stage's one curve file, of neither task
            assert rendered[0]["content"]["data"]["values"], name
            continue
        values = rendered[0]["content"]["data"]["values"]
        assert {v["rev"] for v in values} == {"workspace", "HEAD"}, name
        sources = {v.get("filename") or v["filename::field"] for v in values}  # the latter with several fields
        assert {source.split("/")[0] for source in sources} >= {"sv", "cm"}, name


def check_sv_scores(repo: Path) -> None:
    """Every SV number the metrics report is the one hp.evaluation.metrics computes from the score files written beside
    them, AS-norm actually normalises, and every pair of test utterances is a trial."""
    sv = json.loads((repo / "metrics" / "sv.json").read_text())
    o = sv["lists"]["O"]
    # SV learns (learning_sv): its training loss ends far below what an embedding orthogonal to every class
    # scores, and the unseen speakers' EER is one a chance-level model (0.5, sd ~0.06 on these 72 target trials)
    # cannot reach
    trained = json.loads((repo / "metrics" / "sv" / "finetune.json").read_text())
    assert trained["final_task_loss"] < 0.7 * trained["chance_task_loss"], trained
    assert o["asnorm"]["eer"] < 0.33, o
    assert sv["asnorm_top_n"] == 24  # all 24 training speakers
    assert set(sv["baseline_ltas"]) == {"O"} and 0 <= sv["baseline_ltas"]["O"]["eer"] <= 1  # hp.evaluation.baselines
    exported = read_trial_scores(repo / "scores" / "sv" / "O.txt")
    assert len(exported) == o["trials"] == 48 * 47 // 2  # every pair of the 48 test utterances
    assert exported["label"].sum() == 12 * (4 * 3 // 2)  # the same-speaker pairs: 6 per speaker
    scored = pd.read_parquet(repo / "scores" / "sv" / "scores.parquet")
    for kind in ("cosine", "asnorm"):
        values, labels = scored[f"score_{kind}"].to_numpy(), scored["label"].to_numpy()
        assert o[kind]["eer"] == pytest.approx(metrics.eer(values, labels), abs=1e-12)
        assert o[kind]["min_dcf_0.01"] == pytest.approx(metrics.min_dcf(values, labels, 0.01), abs=1e-12)
    np.testing.assert_allclose(exported["score"], scored["score_asnorm"], atol=5e-7)  # the final scores, 6 d.p.
    assert np.abs(scored["score_asnorm"] - scored["score_cosine"]).max() > 1e-3
    # the final (AS-norm) scores' curve: 400 of its 1,129 points (thinned for plotting), both ends included
    det = pd.read_csv(repo / "plots" / "sv" / "det.csv")
    p_fa, p_miss = metrics.det_curve(scored["score_asnorm"].to_numpy(), scored["label"].to_numpy())
    assert len(p_fa) == 1129 and len(det) == 400
    points = {(round(a, 9), round(b, 9)) for a, b in zip(p_fa, p_miss)}
    assert all((round(a, 9), round(b, 9)) in points for a, b in zip(det["p_fa"], det["p_miss"]))
    assert det.iloc[0].tolist() == pytest.approx([p_fa[0], p_miss[0]])
    assert det.iloc[-1].tolist() == pytest.approx([p_fa[-1], p_miss[-1]])


def check_cm_scores(repo: Path) -> None:
    """The trained CM model separates the mini corpus's spoofs, bona fide scoring higher (a swapped label would
    show as a negative calibration slope and an EER above 0.5), and the reported EER, minDCF and Cllr are those of
    the LLR files the ASVspoof5 package would read, against the protocol's keys."""
    cm = json.loads((repo / "metrics" / "cm.json").read_text())
    assert cm["calibration"]["weights"][0] > 0
    for split, unseen in (("dev", ["A17"]), ("eval", ["A17", "A18"])):  # training's attacks: A01, A02
        assert max(cm[split]["attacks"][a]["eer"] for a in ("A01", "A02")) < 0.2  # the seen ones are learned
        assert set(cm[split]["attacks"]) == {"A01", "A02", *unseen}
        assert [a for a, m in cm[split]["attacks"].items() if m["unseen"]] == cm[split]["unseen"]["attacks"] == unseen
        llrs = pd.read_csv(repo / "scores" / "cm" / f"{split}.txt", sep="\t")
        assert llrs.columns.tolist() == ["filename", "cm-score"] and len(llrs) == cm[split]["utterances"]
        keys = pd.read_parquet(repo / "data" / "cm" / "manifests" / f"{split}.parquet").set_index("utt")["label"]
        bonafide = (keys.loc[llrs["filename"]] == "bonafide").to_numpy()
        assert bonafide.sum() == cm[split]["bonafide"]
        scores = llrs["cm-score"].to_numpy()
        assert cm[split]["eer"] == pytest.approx(metrics.eer(scores, bonafide), abs=1e-9)
        assert cm[split]["min_dcf"] == pytest.approx(
            metrics.min_dcf(scores, bonafide, CM_P_TARGET, CM_C_MISS, CM_C_FA), abs=1e-9)
        assert cm[split]["cllr"] == pytest.approx(metrics.cllr(scores, bonafide), abs=1e-5)  # LLRs kept to 6 d.p.


def check_report(reports: Path) -> None:
    """Every table, every figure written and referenced; the HTML self-contained (images inline, nothing
    fetched)."""
    md, page = (reports / "report.md").read_text(), (reports / "report.html").read_text()
    for header in ("|  | sv | cm |", "| task | model | params (front end) | params (inference) | MMACs (4 s) | "
                   "PyTorch CPU (ms) | onnxruntime CPU (ms) |", "| trial list | scoring | trials | EER (%) |",
                   "| split | bona fide | spoof | EER (%) |", "| split | attack | spoofs |", "| split | codec |"):
        assert header in md, header
    assert "| eval | A02 |" in md and "| dev | - |" in md  # per-attack and per-codec rows
    assert "| sv | compact |" in md and "| cm | dense |" in md
    assert "**Toy scale (sv, cm).**" in md and "Smoke run" not in md  # hp's pretrained front end, labelled as such
    held_out = json.loads((reports.parent / "metrics" / "pretrain.json").read_text())["held_out"]  # how well it learned
    assert f"cluster {held_out['masked_accuracy']:.1%} of the time" in md
    assert "| baseline: LTAS cosine (no training) |" in md and "| task loss: last step / chance |" in md
    assert "Parameters: the committed defaults (params.yaml at git HEAD), none changed." in md
    assert re.search(r"source digest `[0-9a-f]{12}`, git `[0-9a-f]{7}", md)
    figures = sorted(p.name for p in (reports / "figures").iterdir())
    assert figures == ["architecture.png", "cm_scores.png", "det.png", "sv_scores.png", "training.png"]
    assert sorted(re.findall(r"\]\(figures/([a-z_]+\.png)\)", md)) == figures
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(figures) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    outside_fences = re.sub(r"^(`{3,})\n.*?^\1$", "", md, flags=re.M | re.S)  # collapsed text: no tables
    assert page.count("<table>") == outside_fences.count("\n|---|") and "<details>" in page


def check_exports(repo: Path, tmp_path: Path) -> None:
    """The bundles: ONNX checked by the stage; cost measured; the command line answers from them."""
    for task in ("sv", "cm"):
        e = json.loads((repo / "metrics" / task / "export.json").read_text())
        assert max(p["scaled"] for p in e["onnx"]["parity"].values()) <= e["onnx"]["tolerance"] == 1e-4
        assert e["compact"]["macs"] < e["dense"]["macs"] and e["compact"]["params"] < e["dense"]["params"]
        assert set(e["compact"]["latency_ms"]) >= {"torch_cpu", "onnxruntime_cpu"}
        # the int8 graph on a model that learned: its embeddings keep their direction, and its test-set EER lies
        # in the fp32 graph's interval (hp.deploy.quantize; the card shows both)
        tested, agreement = e["test_set"], e["int8"]["agreement"]
        assert agreement["embeddings"]["min_cosine"] > 0.99
        ci = tested["fp32"]["eer_ci95"]
        assert ci["lo"] <= tested["int8"]["eer"] <= ci["hi"], (task, tested)
        assert e["int8"]["bytes"] < 0.6 * e["onnx"]["bytes"]
    test = pd.read_parquet(repo / "data" / "sv" / "manifests" / "test.parquet")
    a, b = test["path"].iat[0], test["path"].iat[1]
    cli = [sys.executable, "-m", "hp"]
    verdict = json.loads(run([*cli, "verify", a, b], repo))
    assert verdict["decision"] in ("target", "nontarget") and -1 <= verdict["score"] <= 1
    trials = pd.read_parquet(repo / "data" / "sv" / "manifests" / "trials.parquet")
    scored = pd.read_parquet(repo / "scores" / "sv" / "scores.parquet")
    pair = scored[((scored["enroll"] == test["utt"].iat[0]) & (scored["test"] == test["utt"].iat[1]))
                  | ((scored["enroll"] == test["utt"].iat[1]) & (scored["test"] == test["utt"].iat[0]))]
    if len(pair):  # the pipeline scored this pair: the command line's cosine is the same score
        assert verdict["score"] == pytest.approx(pair["score_cosine"].iat[0], abs=1e-4)
    assert len(trials) > 0
    evaluation = pd.read_parquet(repo / "data" / "cm" / "manifests" / "eval.parquet").head(4)
    out = tmp_path / "cm.tsv"
    run([*cli, "detect", *evaluation["path"], "--out", str(out), "--runtime", "onnx"], repo)
    detected = pd.read_csv(out, sep="\t")
    llrs = pd.read_parquet(repo / "scores" / "cm" / "scores.parquet").set_index("utt")["score_llr"]
    np.testing.assert_allclose(detected["llr"], llrs.loc[evaluation["utt"]].to_numpy(), atol=1e-3)
