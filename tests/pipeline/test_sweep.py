"""A sparsity sweep through DVC's experiment queue, as the README documents it: each queued experiment runs
in its own temporary checkout (tracked files only), several at once, with nothing shared but DVC's cache. The
experiments run CM's stages only (`dvc exp run ... export@cm`): the queue and the sweep report are what is tested
here, and both tasks' stages run end to end in test_pipeline_e2e.py."""
import json
import shutil
import sys
import time

import pandas as pd
import pytest
import yaml

from pipeline_repo import ROOT, make_repo, run, small_params



def tiny_params() -> dict:
    """The smallest settings that still run every CM stage: 4 speakers, 4 epochs of 2-utterance batches, one
    parity length and one timed run."""
    p = small_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    p["prepare"]["cm"]["mini"].update(train_speakers=2, test_speakers=1, bonafide_per_speaker=2, spoofed_per_speaker=2,
                                      test_bonafide_per_speaker=2, test_spoofed_per_speaker=2)
    p["finetune"]["cm"].update(epochs=4, batch_size=2, sparsity_warmup_epochs=2, warmup_epochs=1)
    p["export"].update(parity_seconds=[1.0], repeats=1)
    return p


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_queued_sparsity_sweep(tmp_path):
    repo = make_repo(tmp_path, tiny_params())
    run(["dvc", "exp", "run", "--queue", "-S", "target_sparsity=0.3,0.6", "export@cm"], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.time() + 900
    while True:
        status = run(["dvc", "queue", "status"], repo)
        if not any(word in status for word in ("Queued", "Running")) or time.time() > deadline:
            break
        time.sleep(5)
    assert "Failed" not in status and status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))
    results = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            data = experiment["revs"][0]["data"]
            target = data["params"]["params.yaml"]["data"]["target_sparsity"]
            results[target] = {"cm": data["metrics"]["metrics/cm.json"]["data"]}
    assert sorted(results) == [0.3, 0.6]
    for target, tasks in results.items():
        for task, metrics in tasks.items():  # each experiment scored its own model, at its own target
            assert metrics["target_sparsity"] == target and 0 < metrics["achieved_sparsity"] < 1
    assert results[0.3]["cm"]["params_compact"] > results[0.6]["cm"]["params_compact"]
    # the workspace itself was left alone: it holds only the committed pretrain stage's metrics
    assert [p.name for p in (repo / "metrics").iterdir()] == ["pretrain.json"]
    # the sweep report reads the same experiments: both targets, each with its measured latency, both fronts
    run([sys.executable, "-m", "hp.reporting.sweep", "--repo", str(repo), "--out", str(tmp_path / "sweep")], ROOT)
    table = pd.read_csv(tmp_path / "sweep" / "sweep.csv")
    assert sorted(zip(table["task"], table["target_sparsity"])) == [("cm", 0.3), ("cm", 0.6)]
    assert (table["latency_ms"] > 0).all() and table["front_params"].any() and table["front_latency"].any()
    # each EER's interval survives `dvc exp show` (which drops lists from metrics files) and holds its point
    assert (table["eer_ci95_lo"] <= table["eer"]).all() and (table["eer"] <= table["eer_ci95_hi"]).all()
    md = (tmp_path / "sweep" / "sweep.md").read_text()
    assert "figures/pareto.png" in md and (tmp_path / "sweep" / "figures" / "pareto.png").stat().st_size > 0
    assert 'src="http' not in (tmp_path / "sweep" / "sweep.html").read_text()
