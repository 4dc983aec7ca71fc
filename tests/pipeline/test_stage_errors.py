"""A stage that fails on one of hp's own errors ends with one line on stderr naming the file, line or key, exit
status 1 and nothing after it; HP_TRACEBACK=1 shows the traceback; the previous run's curves are left alone."""
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from helpers import ROOT_DIR
from pipeline_repo import make_repo, repo_env, run_stage as stage, tiny_params


def write_params(cwd, **changes) -> dict:
    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    params.update(changes)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    return params


def test_a_params_error_is_one_line_and_exit_status_1(tmp_path):
    write_params(tmp_path, target_sparsity="abc")
    done = stage(tmp_path, "stages.compact", "sv")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "compact@sv: error: params.yaml: target_sparsity must be a number in [0, 1), got 'abc'\n"
    shown = stage(tmp_path, "stages.compact", "sv", HP_TRACEBACK="1")
    assert shown.returncode == 1 and shown.stderr.startswith("Traceback (most recent call last):")
    assert shown.stderr.rstrip().endswith("hp.errors.ConfigError: params.yaml: target_sparsity must be a number in "
                                          "[0, 1), got 'abc'")


def test_validate_refuses_a_bad_key_of_any_group_before_any_stage_works(tmp_path):
    """The DAG's first stage checks every group: a misspelt finetune key fails there, before prepare runs."""
    params = write_params(tmp_path)
    params["finetune"]["sv"]["epochs"] = "abc"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = stage(tmp_path, "stages.validate")
    assert done.returncode == 1 and done.stdout == "" and not (tmp_path / "checks").exists()
    assert done.stderr == "validate: error: params.yaml: finetune.sv.epochs must be an integer, got 'abc'\n"
    write_params(tmp_path)
    done = stage(tmp_path, "stages.validate")
    assert done.returncode == 0 and (tmp_path / "checks" / "params.json").is_file()


def test_dvc_repro_stops_at_a_bad_key_before_the_first_stage_works(tmp_path):
    params = tiny_params()
    params["score"]["sv"]["asnorm_topn"] = 10  # misspelt, in a group only the score stage reads
    repo = make_repo(tmp_path, params)
    done = subprocess.run(["dvc", "repro"], cwd=repo, env=repo_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "validate: error: params.yaml: unknown key score.sv.asnorm_topn" in done.stderr
    assert "Running stage 'validate'" in done.stdout and "prepare" not in done.stdout
    assert not (repo / "data").exists() and not (repo / "checks").exists()


def test_ctrl_c_is_one_line_and_status_130(tmp_path):
    (tmp_path / "stages").mkdir()  # a stage of this directory's own that waits to be interrupted
    (tmp_path / "stages" / "wait.py").write_text("import time\nimport hp.stages\nprint('ready', flush=True)\n"
                                                 "time.sleep(60)\n")
    # as from a terminal: a shell's background job (CI's runner may be one) inherits SIGINT ignored
    process = subprocess.Popen([sys.executable, "-m", "stages.wait", "sv"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT_DIR)},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err == "wait@sv: interrupted (Ctrl-C); `dvc repro` runs it again (training resumes from its last " \
                  "checkpoint)\n"


def test_a_bug_keeps_its_traceback(tmp_path):
    (tmp_path / "stages").mkdir()  # a stage script of this directory's own (python -m finds it first)
    (tmp_path / "stages" / "boom.py").write_text("import hp.stages\n{}['missing']\n")
    done = stage(tmp_path, "stages.boom", "sv")
    assert done.returncode == 1 and done.stderr.startswith("Traceback (most recent call last):")
    assert done.stderr.rstrip().endswith("KeyError: 'missing'")


@pytest.mark.slow  # subprocess training
@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_cut_mid_stream_ends_training_with_its_name_and_keeps_the_last_curves(tmp_path, workers):
    """The manifests stage ran with headers only, so training meets the cut FLAC: one line names it, also when a
    DataLoader worker read it; the committed curves (dvclive/sv, a persist output) are as they were."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(3):
        for u in range(4):
            path = tmp_path / "audio" / f"id{s}" / f"{u}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
            rows.append({"utt": f"id{s}/{u}.flac", "path": str(path), "speaker": f"id{s}", "label": f"id{s}",
                         "duration_s": 0.5, "sample_rate": 16000, "split": "train"})
    cut = tmp_path / "audio" / "id1" / "2.flac"
    cut.write_bytes(cut.read_bytes()[:2000])  # the header intact, the stream cut
    manifests = tmp_path / "data" / "sv" / "manifests"
    manifests.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(manifests / "train.parquet")
    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    params["model"]["pretrained"]["sv"] = "tiny"
    params["finetune"]["sv"].update(epochs=2, batch_size=12, crop_seconds=0.5, warmup_epochs=1,
                                    sparsity_warmup_epochs=1, aug_prob=0.0, resume="never")
    params["runtime"].update(device="cpu", num_workers=workers)
    write_params(tmp_path, **params)
    curves = tmp_path / "dvclive" / "sv" / "plots" / "metrics"
    curves.mkdir(parents=True)
    (curves / "task_loss.tsv").write_text("step\ttask_loss\n0\t1.0\n")  # the previous run's
    done = stage(tmp_path, "stages.finetune", "sv")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()  # libsndfile's words depend on where the read starts
    assert re.fullmatch(rf"finetune@sv: error: {re.escape(str(cut))}: cannot read audio \((Error : flac decoder lost "
                        r"sync\.|Internal psf_fseek\(\) failed\.)\); the manifests stage's decode check "
                        r"\(manifests\.check_audio: decode\) finds every such file", line), line
    assert sorted(p.name for p in curves.iterdir()) == ["task_loss.tsv"]
    assert (curves / "task_loss.tsv").read_text() == "step\ttask_loss\n0\t1.0\n"
    assert not (tmp_path / "models" / "sv" / "finetuned").exists()
    assert not (tmp_path / "metrics" / "sv" / "finetune.json").exists()
