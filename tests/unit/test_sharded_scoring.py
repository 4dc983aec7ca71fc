"""The score stage on several processes: each rank embeds a share of the utterances, rank 0 scores and writes;
2 gloo processes give the scores 1 process gives."""
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import hp
from hp.stages.manifests import manifests
from hp.stages.prepare import prepare
from hp.tasks import CM_LABELS, TaskModel
from hp.utils import distributed
from configs import head_config
from pipeline_repo import ROOT, run_stage, small_params


def test_shares_cover_every_item_once_and_a_single_process_sums_nothing(monkeypatch):
    for world in (1, 2, 3, 7):
        shares = []
        for rank in range(world):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", str(world))
            shares.append(distributed.share(10))
        assert sorted(np.concatenate(shares).tolist()) == list(range(10))
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    array = np.arange(6.0).reshape(2, 3)
    assert distributed.all_sum(array) is array and array.tolist() == [[0, 1, 2], [3, 4, 5]]


def score_stage(cwd, task: str, processes: int) -> subprocess.CompletedProcess:
    params = yaml.safe_load((cwd / "params.yaml").read_text())
    params["runtime"]["nproc_per_node"] = processes
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    # one thread per process either way, so that both compute every sum in the same order
    return run_stage(cwd, "stages.score", task, OMP_NUM_THREADS="1")


@pytest.mark.slow  # the score stage in subprocesses, once under torchrun
@pytest.mark.parametrize("task", ["sv", "cm"])
def test_two_gloo_processes_score_as_one(tmp_path, task):
    params = small_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params["score"]["batch_seconds"] = 4.0  # many batches, so that both ranks embed several
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    data = tmp_path / "data" / task
    prepare(task, params, data / "corpus")
    summary = manifests(task, params, data / "corpus", data / "manifests")
    torch.manual_seed(0)
    labels = sorted(pd.read_parquet(data / "manifests" / "train.parquet")["label"].unique()) if task == "sv" \
        else list(CM_LABELS)
    TaskModel(task, hp.Frontend(hp.SHAPES["tiny"], prune_units=()), labels,
              head_config(heads=2, compression=8, embedding=8)).save(tmp_path / "models" / task / "compact")
    (tmp_path / "metrics" / task).mkdir(parents=True)
    (tmp_path / "metrics" / task / "compact.json").write_text(json.dumps(
        {"target_sparsity": 0.0, "sparsity_tolerance": 0.01, "params_dense": 1, "params_compact": 1,
         "achieved_sparsity": 0.0}))
    results = {}
    for processes in (1, 2):
        done = score_stage(tmp_path, task, processes)
        assert done.returncode == 0, done.stderr[-3000:]
        results[processes] = (pd.read_parquet(tmp_path / "scores" / task / "scores.parquet"),
                              json.loads((tmp_path / "metrics" / f"{task}.json").read_text()))
    (one, one_metrics), (two, two_metrics) = results[1], results[2]
    assert len(one) == (summary["trials"] if task == "sv" else summary["dev"] + summary["eval"])
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert one_metrics == two_metrics
    scores = [c for c in one if c.startswith("score_")]
    assert scores and one[scores].notna().all().all() and one[scores[0]].nunique() > len(one) // 2
