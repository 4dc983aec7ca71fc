"""The DVC pipeline end to end in a throw-away git repository, then an `exp run -S` override."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    report = (repo / "reports" / "report.md").read_text()
    assert "| eval | A02 |" in report and "| dev | - |" in report  # per-attack and per-codec rows
    for figure in ("det.png", "training.png", "structure.png", "cm_scores.png"):
        assert f"figures/{figure}" in report and (repo / "reports" / "figures" / figure).stat().st_size > 0
    assert (repo / "dvc.lock").is_file()
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)

    run(["dvc", "exp", "run", "-S", "target_sparsity=0.5"], repo)
    for task in ("sv", "cm"):
        m = json.loads((repo / "metrics" / f"{task}.json").read_text())
        assert m["target_sparsity"] == 0.5 and abs(m["achieved_sparsity"] - 0.5) <= tolerance[task] + 1e-9
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))
    text = json.dumps(shown)
    assert '"target_sparsity": 0.5' in text and '"target_sparsity": 0.7' in text
    assert "metrics/sv.json" in run(["dvc", "metrics", "diff", "HEAD"], repo)
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo)
    assert (tmp_path / "plots" / "index.html").is_file()
