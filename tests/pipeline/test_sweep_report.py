"""hp.reporting.sweep, the sweep report, on the output of a real `dvc exp show --json`: a throw-away DVC repository
whose one stage writes fake metrics from target_sparsity, swept through the experiment queue."""
import copy
import re
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from filelock import FileLock

from hp.reporting.experiments import collect
from hp.reporting.pareto import error_bars, pareto_front
from hp.reporting.sweep import main
from hp.reporting.sweep_report import write_sweep_report
from pipeline_repo import run

# The fake stage: parameters and latency fall with the target; SV's EER rises with it (every point on the front),
# CM's falls (the sparsest point dominates the rest). Without --export it writes no export.json and neither the MAC
# target nor the two sparsities (an older run); with it the runs target MACs.
FAKE_STAGE = '''
import json, os, sys, yaml
t = yaml.safe_load(open("params.yaml"))["target_sparsity"]
if t > 1:
    sys.exit("target_sparsity above 1")
def dump(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
size = {"task": None, "target_sparsity": t, "params_dense": 1000, "params_compact": round(1000 * (1 - t)),
        "achieved_sparsity": t + 0.01}
if "--export" in sys.argv:
    size.update(target_measure="macs", macs_sparsity=size["achieved_sparsity"], params_sparsity=t)
scores = {"eer": 0.02 + t / 10, "min_dcf_0.01": 0.1 + t / 2, "min_dcf_0.05": 0.05 + t / 2}
dump("metrics/sv.json", {**size, "task": "sv", "lists": {"O": {"trials": 10, "cosine": scores, "asnorm": scores},
                                                        "E": {"trials": 5, "cosine": scores, "asnorm": scores}}})
cm = {"eer": 0.2 - t / 10, "min_dcf": 0.5 - t / 4, "act_dcf": 0.6, "cllr": 0.5}
dump("metrics/cm.json", {**size, "task": "cm", "dev": cm, "eval": cm})
if "--export" in sys.argv:
    for task in ("sv", "cm"):
        dump(f"metrics/{task}/export.json", {
            "input": {"batch": 1, "seconds": 4.0},
            "dense": {"params": 1000, "macs": 10000, "latency_ms": {"torch_cpu": 100.0}},
            "compact": {"params": size["params_compact"], "macs": 10 * size["params_compact"],
                        "latency_ms": {"torch_cpu": 100.0 * (1 - t), "onnxruntime_cpu": 50.0 * (1 - t)}}})
'''


def dvc_yaml(export: bool) -> str:
    metrics = ["metrics/sv.json", "metrics/cm.json"] + (["metrics/sv/export.json", "metrics/cm/export.json"]
                                                        if export else [])
    stage = {"cmd": "python fake.py" + (" --export" if export else ""), "deps": ["fake.py"],
             "params": ["target_sparsity"], "metrics": [{m: {"cache": False}} for m in metrics]}
    return yaml.safe_dump({"stages": {"fake": stage}})


def committed_baseline(repo: Path, stage: str) -> Path:
    """A git + DVC repository whose fake pipeline (`stage`) ran at target 0.7 and was committed."""
    repo.mkdir()
    (repo / "fake.py").write_text(stage)
    (repo / "params.yaml").write_text("target_sparsity: 0.7\nsparsity_tolerance: 0.01\n")
    (repo / "dvc.yaml").write_text(dvc_yaml(export=True))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(["dvc", "repro", "-q"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    return repo


def build_sweep(repo: Path) -> list:
    """Baseline 0.7 committed; 0.3 and 0.9 queued and run, 1.5 queued and failed; 0.5 run in the workspace by the
    older pipeline (no export.json), leaving the workspace equal to it. Returns `dvc exp show --json`."""
    committed_baseline(repo, FAKE_STAGE)
    run(["dvc", "exp", "run", "--queue", "-q", "-n", "low", "-S", "target_sparsity=0.3"], repo)
    run(["dvc", "exp", "run", "--queue", "-q", "-n", "high", "-S", "target_sparsity=0.9"], repo)
    run(["dvc", "exp", "run", "--queue", "-q", "-n", "broken", "-S", "target_sparsity=1.5"], repo)
    run(["dvc", "queue", "start"], repo)
    deadline = time.time() + 120
    while any(word in (status := run(["dvc", "queue", "status"], repo)) for word in ("Queued", "Running")):
        assert time.time() < deadline, status
        time.sleep(0.5)
    assert status.count("Success") == 2 and status.count("Failed") == 1, status
    (repo / "dvc.yaml").write_text(dvc_yaml(export=False))
    for task in ("sv", "cm"):
        (repo / "metrics" / task / "export.json").unlink()
    run(["dvc", "exp", "run", "-q", "-n", "old", "-S", "target_sparsity=0.5"], repo)
    return json.loads(run(["dvc", "exp", "show", "--json"], repo))


@pytest.fixture(scope="session")
def sweep_repo(tmp_path_factory):
    """(repo, `dvc exp show --json`) of build_sweep, built once across pytest-xdist workers under a file lock (as
    the reference run, tests/pipeline/conftest.py); tests read both and write to neither."""
    if shutil.which("git") is None:
        pytest.skip("needs git")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's base directory, above each worker's own
    shown = root / "sweep" / "shown.json"
    with FileLock(str(root / "sweep.lock")):
        if not shown.is_file():
            (root / "sweep").mkdir(exist_ok=True)
            shown.write_text(json.dumps(build_sweep(root / "sweep" / "repo")))
    return root / "sweep" / "repo", json.loads(shown.read_text())


def brute_front(cost, error):
    n = len(cost)
    ok = [np.isfinite(cost[i]) and np.isfinite(error[i]) for i in range(n)]
    return np.array([ok[i] and not any(ok[j] and cost[j] <= cost[i] and error[j] <= error[i]
                                       and (cost[j] < cost[i] or error[j] < error[i]) for j in range(n))
                     for i in range(n)])


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(0, 25))
        cost = rng.integers(0, 6, n).astype(float)  # few distinct values: many ties in cost, error or both
        error = rng.integers(0, 6, n).astype(float)
        cost[rng.random(n) < 0.1] = np.nan
        error[rng.random(n) < 0.1] = np.nan
        assert np.array_equal(pareto_front(cost, error), brute_front(cost, error)), (cost, error)
    assert pareto_front([1, 1], [2, 2]).tolist() == [True, True]  # equal points dominate neither
    assert pareto_front([1, 1, 2], [2, 3, 1]).tolist() == [True, False, True]  # same cost, worse error
    assert pareto_front([], []).tolist() == []


@pytest.mark.slow  # a fake pipeline's DVC experiment queue
def test_collect_from_dvc_exp_show(sweep_repo):
    _, shown = sweep_repo
    notes = []
    table = collect(shown, notes)
    baseline = next(c["rev"][:7] for c in shown if c["rev"] != "workspace")
    for task in ("sv", "cm"):
        rows = table[table["task"] == task]
        # the workspace equals `old`, the failed run is left out; sorted by target
        assert rows["experiment"].tolist() == ["low", "old", baseline, "high"]
        assert rows["target_sparsity"].tolist() == [0.3, 0.5, 0.7, 0.9]
        assert rows["kind"].tolist() == ["experiment", "experiment", "commit", "experiment"]
        assert rows["params_compact"].tolist() == [700, 500, 300, 100]
        latency = rows["latency_ms"].to_numpy()
        assert np.isnan(latency[1]) and np.allclose(latency[[0, 2, 3]], [70, 30, 10])
        assert rows["macs_compact"].isna().tolist() == [False, True, False, False]
        assert rows["front_latency"].isna().tolist() == [False, True, False, False]  # `old` has no latency
        assert rows["target_measure"].tolist() == ["macs", "params", "macs", "macs"]  # `old`: before the MAC target
        assert np.allclose(rows["params_sparsity"], [0.3, 0.51, 0.7, 0.9])  # `old`'s achieved one was of params
        assert np.isnan(rows["macs_sparsity"].iloc[1]) and np.allclose(rows["macs_sparsity"].iloc[[0, 2, 3]],
                                                                       [0.31, 0.71, 0.91])
        assert rows["front_macs"].isna().tolist() == [False, True, False, False]
    sv, cm = table[table["task"] == "sv"], table[table["task"] == "cm"]
    assert np.allclose(sv["eer"], [0.05, 0.07, 0.09, 0.11]) and set(sv["scored"]) == {"list O, AS-norm"}
    assert np.allclose(cm["eer"], [0.17, 0.15, 0.13, 0.11])
    assert np.allclose(cm["min_dcf"], 0.5 - cm["target_sparsity"] / 4)
    assert sv["front_params"].tolist() == [True] * 4 and sv["front_latency"].tolist()[::2] == [True, True]
    assert cm["front_params"].tolist() == [False, False, False, True]
    assert cm["front_latency"].tolist()[2:] == [False, True] and cm["front_latency"].tolist()[0] is False
    assert notes == ["broken: experiment failed"]


@pytest.mark.slow  # a fake pipeline's DVC experiment queue
def test_collect_workspace_queued_stale_and_broken(sweep_repo, tmp_path):
    _, shown = sweep_repo
    shown = copy.deepcopy(shown)
    workspace = shown[0]["data"]
    assert shown[0]["rev"] == "workspace"
    workspace["metrics"]["metrics/sv.json"]["data"]["lists"]["O"]["asnorm"]["eer"] = 0.01  # uncommitted results
    workspace["metrics"]["metrics/cm.json"] = {"error": {"type": "JSONFileCorruptedError", "msg": "corrupted"}}
    experiments = shown[1]["experiments"]
    high = next(e for e in experiments if e["name"] == "high")
    high["executor"]["state"] = "queued"
    low = next(e for e in experiments if e["name"] == "low")["revs"][0]["data"]
    low["params"]["params.yaml"]["data"]["target_sparsity"] = 0.4  # params edited, not reproduced
    old = next(e for e in experiments if e["name"] == "old")["revs"][0]["data"]
    del old["metrics"]["metrics/cm.json"]["data"]["eval"]
    old["metrics"]["metrics/sv.json"]["data"].update(achieved_sparsity=0.55, sparsity_tolerance=None)  # check off
    notes = []
    table = collect(shown, notes)
    assert table[table["task"] == "sv"]["experiment"].tolist() == ["old", "workspace", shown[1]["rev"][:7]]
    assert table[table["task"] == "cm"]["experiment"].tolist() == [shown[1]["rev"][:7]]
    assert table[table["task"] == "cm"]["front_params"].isna().all()  # one point: no front
    assert "old cm: metrics/cm.json lacks 'eval'" in notes
    assert "high: experiment queued" in notes and "broken: experiment failed" in notes
    assert "workspace cm: metrics/cm.json: corrupted" in notes
    assert any(n.startswith("low sv: metrics/sv.json is for target_sparsity 0.3") for n in notes)
    assert table[table["task"] == "sv"]["front_params"].tolist() == [False, True, True]
    assert table[table["task"] == "sv"]["off_target"].tolist() == [True, False, False]  # 0.05 off; others 0.01
    write_sweep_report(table, tmp_path / "marked")
    md = (tmp_path / "marked" / "sweep.md").read_text()
    assert "| old | 0.500 params | 0.5500* | – |" in md and "*: the achieved sparsity misses the target" in md


@pytest.mark.slow  # a fake pipeline's DVC experiment queue
def test_report(sweep_repo, tmp_path, capsys):
    _, shown = sweep_repo
    (tmp_path / "shown.json").write_text(json.dumps(shown))
    out = tmp_path / "sweep"
    assert main(["--json", str(tmp_path / "shown.json"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "sweep.md" in printed[0] and str(out) in printed[0]
    md, page = (out / "sweep.md").read_text(), (out / "sweep.html").read_text()
    assert (out / "figures" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](figures/pareto.png)" in md
    assert 'src="data:image/png;base64,' in page and 'src="http' not in page
    assert "SV: list O, AS-norm EER; CM: eval EER" in md
    for heading in ("## Speaker verification (SV)", "## Anti-spoofing (CM)"):
        section = md.split(heading)[1].split("\n## ")[0]
        rows = [line for line in section.splitlines() if line.startswith("| ") and "experiment" not in line]
        assert [row.split(" | ")[0][2:] for row in rows] == ["low", "old", shown[1]["rev"][:7], "high"]
        assert "| 0.500 params | 0.5100 | – | 500 | – | – |" in section  # `old`: no MACs, no latency
        assert "| 0.300 macs | 0.3000 | 0.3100 | 700 | 7,000 | 70.0 |" in section
    assert page.count("<table>") == 2 and "broken: experiment failed" in md
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 8 and set(table["task"]) == {"sv", "cm"}
    assert table.loc[table["task"] == "cm", "front_params"].tolist() == [False, False, False, True]


@pytest.mark.slow  # a fake pipeline's DVC experiment queue
def test_report_from_dvc_one_experiment_no_latency(sweep_repo, tmp_path, capsys):
    """`--repo` runs dvc itself; a table of one experiment without export.json still gives a report."""
    repo, shown = sweep_repo
    assert main(["--repo", str(repo), "--out", str(tmp_path / "full")]) == 0
    assert len(pd.read_csv(tmp_path / "full" / "sweep.csv")) == 8
    assert json.loads((tmp_path / "full" / "experiments.json").read_text()) == shown  # `--json` redraws from it
    old = collect(shown)
    write_sweep_report(old[old["experiment"] == "old"], tmp_path / "one")
    assert pd.read_csv(tmp_path / "one" / "sweep.csv")["front_params"].isna().all()  # one point makes no front
    md = (tmp_path / "one" / "sweep.md").read_text()
    assert md.count("Fewer than 2 experiments: no Pareto front.") == 2 and "| – | – |" in md
    assert (tmp_path / "one" / "figures" / "pareto.png").is_file()


def test_dvc_failure(tmp_path, capsys):
    """Outside a DVC repository: dvc's own error, on one line."""
    assert main(["--repo", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`dvc exp show --json` failed" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, message", [
    ("{broken", "not valid JSON"),
    ("", "not valid JSON"),
    ("{}", "expected the list"),
    ("[]", "no usable experiment"),
    (json.dumps([{"rev": "workspace", "data": {"params": {}, "metrics": {}}, "error": None, "experiments": None}]),
     "no usable experiment"),
    (None, "file not found"),
])
def test_bad_input(tmp_path, capsys, content, message):
    path = tmp_path / "shown.json"
    if content is not None:
        path.write_text(content)
    assert main(["--json", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    if "usable" not in message:
        assert str(path) in err[0]  # names the file
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a DVC experiment queue of five fake runs (~30 s)
def test_make_sweep_targets_with_the_baseline_give_six_points_dense_included(tmp_path):
    """`make sweep`'s SPARSITIES queued as it queues them, beside the committed baseline (0.7): hp.reporting.sweep
    reports the six targets 0, 0.3, 0.5, 0.7, 0.8, 0.9 per task; the dense run (0: nothing removed, compact = dense
    parameters) is a row of its own and, with the lowest SV EER, on SV's front vs parameters."""
    from pipeline_repo import ROOT

    if shutil.which("git") is None:
        pytest.skip("needs git")
    sparsities = re.search(r"^SPARSITIES \?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    assert sparsities.split(",")[0] == "0"
    stage = FAKE_STAGE.replace('"achieved_sparsity": t + 0.01', '"achieved_sparsity": t + 0.01 * (t > 0)')
    assert stage != FAKE_STAGE
    repo = committed_baseline(tmp_path / "repo", stage)
    tolerance = re.search(r"^TOLERANCE  \?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.M).group(1)
    run(["dvc", "exp", "run", "--queue", "-q", "-S", f"target_sparsity={sparsities}", "-S",
         f"sparsity_tolerance={tolerance}"], repo)  # as the Makefile
    run(["dvc", "queue", "start"], repo)
    deadline = time.time() + 180
    while any(word in (status := run(["dvc", "queue", "status"], repo)) for word in ("Queued", "Running")):
        assert time.time() < deadline, status
        time.sleep(0.5)
    assert status.count("Success") == 5, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo))
    ran = [e["revs"][0]["data"]["params"]["params.yaml"]["data"] for c in shown for e in c.get("experiments") or []]
    assert len(ran) == 5 and all(p["sparsity_tolerance"] is None for p in ran)  # a sweep keeps off-target points
    notes = []
    table = collect(shown, notes)
    assert notes == []
    for task in ("sv", "cm"):
        rows = table[table["task"] == task]
        assert rows["target_sparsity"].tolist() == [0.0, 0.3, 0.5, 0.7, 0.8, 0.9]
        assert rows["kind"].tolist() == ["experiment"] * 3 + ["commit"] + ["experiment"] * 2
        dense = rows.iloc[0]
        assert dense["achieved_sparsity"] == 0.0 and dense["params_compact"] == dense["params_dense"] == 1000
    assert table[table["task"] == "sv"]["front_params"].tolist() == [True] * 6
    out = tmp_path / "sweep"
    write_sweep_report(table, out, notes)
    for heading in ("## Speaker verification (SV)", "## Anti-spoofing (CM)"):
        section = (out / "sweep.md").read_text().split(heading)[1].split("\n## ")[0]
        assert "| 0.000 macs | 0.0000 | 0.0000 | 1,000 |" in section
    assert sorted(pd.read_csv(out / "sweep.csv")["target_sparsity"]) == sorted([0.0, 0.3, 0.5, 0.7, 0.8, 0.9] * 2)


def _cache_dir_out(cache: Path, files: dict[str, bytes]) -> str:
    """Files stored as DVC 3 caches a directory output (files/md5/<2 hex>/<rest>, the directory a JSON listing):
    the directory's hash, as `dvc exp show --json` lists it."""
    import hashlib

    listing = []
    for name, content in files.items():
        digest = hashlib.md5(content).hexdigest()
        (cache / "files" / "md5" / digest[:2]).mkdir(parents=True, exist_ok=True)
        (cache / "files" / "md5" / digest[:2] / digest[2:]).write_bytes(content)
        listing.append({"md5": digest, "relpath": name})
    text = json.dumps(listing).encode()
    digest = hashlib.md5(text).hexdigest() + ".dir"
    (cache / "files" / "md5" / digest[:2]).mkdir(parents=True, exist_ok=True)
    (cache / "files" / "md5" / digest[:2] / digest[2:]).write_bytes(text)
    return digest


def test_each_run_is_compared_with_the_dense_one_on_the_same_trials(tmp_path):
    """collect() with the DVC cache's scored trials: each SV row's EER minus the dense fine-tune's, with the paired
    interval hp.evaluation.bootstrap.paired gives on the same trials and resamples; a run whose scores are not cached
    keeps its row, without a comparison, and says so."""
    from hp.evaluation.bootstrap import Bootstrap, paired
    from hp.evaluation.metrics import SV_COSTS
    from hp.reporting.sweep import cached_trials
    from hp.reporting.sweep_report import vs_dense_sentence

    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(10), 3)
    pairs = [(i, j) for i in range(30) for j in range(i + 1, 30)]
    trials = pd.DataFrame({"list": "O", "enroll": [f"u{i}" for i, _ in pairs], "test": [f"u{j}" for _, j in pairs],
                           "enroll_speaker": [f"s{speakers[i]}" for i, _ in pairs],
                           "test_speaker": [f"s{speakers[j]}" for _, j in pairs]})
    trials["label"] = (trials["enroll_speaker"] == trials["test_speaker"]).astype(int)
    shown, scores = [{"rev": "abc1234", "data": {}, "experiments": []}], {}
    for name, target, noise in (("dense", 0.0, 1.0), ("pruned", 0.7, 1.6), ("uncached", 0.9, 2.0)):
        scores[name] = rng.normal(scale=noise, size=len(trials)) + 2.0 * trials["label"].to_numpy()
        table = trials.assign(score_asnorm=scores[name])
        eer = {"eer": 0.1, "min_dcf_0.01": 0.5}
        outs = {}
        if name != "uncached":
            path = tmp_path / f"{name}.parquet"
            table.to_parquet(path)
            outs["scores/sv"] = {"hash": _cache_dir_out(tmp_path / "cache", {"scores.parquet": path.read_bytes()})}
        metrics = {"target_sparsity": target, "achieved_sparsity": target, "params_dense": 1000,
                   "params_compact": round(1000 * (1 - target)), "lists": {"O": {"trials": len(trials), "asnorm": eer}}}
        data = {"params": {"params.yaml": {"data": {"target_sparsity": target, "score": {
                    "bootstrap_resamples": 300, "bootstrap_seed": 2}}}},
                "metrics": {"metrics/sv.json": {"data": metrics}}, "outs": outs}
        shown[0]["experiments"].append({"name": name, "revs": [{"rev": name, "data": data}]})
    notes = []
    table = collect(shown, notes, cached_trials(tmp_path, cache=tmp_path / "cache")).set_index("experiment")
    labels, sides = trials["label"].to_numpy(), (trials["enroll_speaker"], trials["test_speaker"])
    expected = paired(Bootstrap(300, 2), scores["pruned"], scores["dense"], labels,
                      {"min_dcf_0.01": SV_COSTS["min_dcf_0.01"]}, *sides)
    pruned = table.loc["pruned"]
    assert pruned["eer_vs_dense"] == pytest.approx(expected["eer"]) and expected["eer"] > 0
    assert [pruned["eer_vs_dense_lo"], pruned["eer_vs_dense_hi"]] == pytest.approx(list(expected["eer_ci95"].values()))
    assert table.loc["dense", ["eer_vs_dense", "eer_vs_dense_lo", "eer_vs_dense_hi"]].tolist() == [0, 0, 0]
    assert np.isnan(table.loc["uncached", "eer_vs_dense"])
    assert notes == ["uncached sv: no scored trials shared with the dense run (no paired comparison)"]
    sentence = vs_dense_sentence(next(table.reset_index().loc[[1]].itertuples()))
    assert sentence.startswith(f"at 0.7, SV EER +{100 * expected['eer']:.2f} points [")
    verdict = "higher than dense" if expected["eer_ci95"]["lo"] > 0 else "not distinguishable"
    assert sentence.endswith(f"vs dense: {verdict} at 95 %")


def test_error_bars_reach_the_interval_in_eer_points():
    """An EER of 16 % with a 95 % interval [14, 19] % draws a bar 2 points below and 3 above (the interval is a
    fraction like the EER: mixing scales drew bars of +-1,600 points); a run without an interval draws none."""
    points = pd.DataFrame({"eer": [0.16, 0.2], "eer_ci95_lo": [0.14, np.nan], "eer_ci95_hi": [0.19, np.nan]})
    bars = error_bars(points)
    assert bars[:, 0] == pytest.approx([2.0, 3.0]) and np.isnan(bars[:, 1]).all()
