"""The DVC pipeline end to end in a throw-away git repository, then an `exp run -S` override."""
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

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def small_params(params: dict) -> dict:
    """The default params scaled down to seconds of training."""
    p = json.loads(json.dumps(params))
    p["prepare"]["sv"]["mini"].update(train_speakers=8, test_speakers=4, sessions=2, utterances_per_session=2,
                                      min_seconds=1.5, max_seconds=2.0)
    p["prepare"]["cm"]["mini"].update(speakers=8, bonafide_per_speaker=3, spoofed_per_speaker=3, min_seconds=1.5,
                                      max_seconds=2.0)
    for task in ("sv", "cm"):
        p["finetune"][task].update(epochs=40, batch_size=4, crop_seconds=1.0, warmup_epochs=2,
                                   sparsity_warmup_epochs=15, log_every=5)
    return p


def run(args, cwd):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def make_repo(tmp_path: Path, params: dict) -> Path:
    """A git repository holding the pipeline (dvc.yaml, stages, hp) and `params`, committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore", "stages", "hp"):
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, repo / name))
    (repo / ".dvc").mkdir()
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "init"], repo)
    return repo


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dvc_repro_and_exp_run(tmp_path):
    params = small_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    tolerance = {task: params["finetune"][task]["freeze_tolerance"] for task in ("sv", "cm")}
    repo = make_repo(tmp_path, params)
    run(["dvc", "repro"], repo)
    for task in ("sv", "cm"):
        m = json.loads((repo / "metrics" / f"{task}.json").read_text())
        assert m["target_sparsity"] == 0.7
        assert m["params_compact"] < m["params_dense"]
        # the mini defaults freeze the structure once it is within freeze_tolerance of the target (params.yaml),
        # and compaction realises the frozen (deterministic) structure exactly
        assert abs(m["achieved_sparsity"] - 0.7) <= tolerance[task] + 1e-9
        assert (repo / "plots" / task / "det.csv").is_file()
    assert (repo / "data" / "sv" / "manifests" / "kaldi" / "train" / "wav.scp").is_file()
    sv = json.loads((repo / "metrics" / "sv.json").read_text())
    o = sv["lists"]["O"]
    assert 0 <= o["cosine"]["eer"] <= 1 and 0 <= o["asnorm"]["eer"] <= 1
    assert sv["asnorm_top_n"] == 8  # all 8 training speakers
    exported = read_trial_scores(repo / "scores" / "sv" / "O.txt")
    assert len(exported) == o["trials"] == 4 * 4 * 15 // 2  # every pair of the 16 test utterances
    cm = json.loads((repo / "metrics" / "cm.json").read_text())
    # the trained CM model tells the mini corpus's spoofs apart, bona fide scoring higher: a swapped label
    # would show as a negative calibration slope
    assert cm["calibration"]["weights"][0] > 0 and cm["eval"]["eer"] < 0.3
    for split in ("dev", "eval"):
        assert 0 <= cm[split]["eer"] <= 1 and set(cm[split]["attacks"]) == {"A01", "A02"}
        cm_lines = (repo / "scores" / "cm" / f"{split}.txt").read_text().splitlines()
        assert cm_lines[0] == "filename\tcm-score" and len(cm_lines) == 1 + cm[split]["utterances"]
    check_report(repo / "reports")
    check_exports(repo, tmp_path)
    assert (repo / "dvc.lock").is_file()
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)

    # the override reaches every stage that reads it; export and report are left out here (the sweep test
    # runs whole experiments)
    run(["dvc", "exp", "run", "-S", "target_sparsity=0.5", "score@sv", "score@cm"], repo)
    for task in ("sv", "cm"):
        m = json.loads((repo / "metrics" / f"{task}.json").read_text())
        assert m["target_sparsity"] == 0.5 and abs(m["achieved_sparsity"] - 0.5) <= tolerance[task] + 1e-9
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))
    text = json.dumps(shown)
    assert '"target_sparsity": 0.5' in text and '"target_sparsity": 0.7' in text
    assert "metrics/sv.json" in run(["dvc", "metrics", "diff", "HEAD"], repo)
    # the declared plots render the DET and training curves, alone and against the last commit
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json"], repo))["data"]
    assert set(plots) >= {"DET curves (miss vs false alarm)", "Task loss", "Sparsity (expected, deterministic, "
                          "target)", "Lagrange multipliers", "Learning rate"}
    for name, rendered in plots.items():
        if name.startswith("plots/"):  # the score stages' own DET files, also drawn alone
            continue
        values = rendered[0]["content"]["data"]["values"]
        assert {v["rev"] for v in values} == {"workspace", "HEAD"}, name
        sources = {v.get("filename") or v["filename::field"] for v in values}  # the latter with several fields
        assert {source.split("/")[0] for source in sources} >= {"sv", "cm"}, name
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo)
    assert (tmp_path / "plots" / "index.html").is_file()


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
    assert "Parameters: the committed defaults (params.yaml at git HEAD), none changed." in md
    assert re.search(r"source digest `[0-9a-f]{12}`, git `[0-9a-f]{7}", md)
    figures = sorted(p.name for p in (reports / "figures").iterdir())
    assert figures == ["architecture.png", "cm_scores.png", "det.png", "sv_scores.png", "training.png"]
    assert sorted(re.findall(r"\]\(figures/([a-z_]+\.png)\)", md)) == figures
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(figures) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, flags=re.I)
    assert page.count("<table>") == md.count("\n|---|") and "<details>" in page


def check_exports(repo: Path, tmp_path: Path) -> None:
    """The bundles: ONNX checked by the stage; cost measured; the command line answers from them."""
    for task in ("sv", "cm"):
        e = json.loads((repo / "metrics" / task / "export.json").read_text())
        assert max(p["scaled"] for p in e["onnx"]["parity"].values()) <= e["onnx"]["tolerance"] == 1e-4
        assert e["compact"]["macs"] < e["dense"]["macs"] and e["compact"]["params"] < e["dense"]["params"]
        assert set(e["compact"]["latency_ms"]) >= {"torch_cpu", "onnxruntime_cpu"}
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
