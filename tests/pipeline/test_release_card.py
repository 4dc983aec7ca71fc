"""The released folders of the suite's reference run: complete and checksummed, each model card's numbers equal to
the metrics files' (the card is read back, not trusted), the cards copied into the report, and both ONNX graphs
scored on the test set as the score stage scored the PyTorch model."""
import json
import subprocess
import sys
import wave

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import only_importing
from hp.deploy.card import percent, with_interval
from hp.deploy.release import FP32, INT8, MANIFEST, verify

TASKS = ("sv", "cm")


def front_matter(card: str) -> dict:
    head, _, _ = card.removeprefix("---\n").partition("\n---\n")
    return yaml.safe_load(head)


@pytest.mark.parametrize("task", TASKS)
def test_the_folder_is_the_release_and_its_card_says_what_the_metrics_say(reference_run, task):
    folder = reference_run / "models" / task / "export"
    assert sorted(verify(folder)) == sorted(["README.md", "model.safetensors", "task.json", FP32, INT8,
                                             "scoring.json"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([*verify(folder), MANIFEST])
    card = (folder / "README.md").read_text()
    scored = json.loads((reference_run / "metrics" / f"{task}.json").read_text())
    export = json.loads((reference_run / "metrics" / task / "export.json").read_text())
    headline = next(iter(scored["lists"].values()))["cosine"] if task == "sv" else scored["eval"]
    meta = front_matter(card)
    assert meta["library_name"] == "hp" and meta["license"] == "other"  # hp's own front end: no base licence
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["eer"] == percent(headline["eer"])
    assert all(metrics[k] == round(headline[k], 4) for k in metrics if k != "eer")
    for line in (f"| front-end parameters | {scored['params_dense']:,} | {scored['params_compact']:,} |",
                 f"| onnxruntime fp32 | model.onnx | {export['onnx']['bytes'] / 1e6:.2f} MB | "
                 f"{export['compact']['latency_ms']['onnxruntime_cpu']:g} ms | "
                 f"{with_interval(export['test_set']['fp32'], 'eer', 100, 2)} % |",
                 f"| onnxruntime int8 ({export['int8']['method']}) | model.int8.onnx | "
                 f"{export['int8']['bytes'] / 1e6:.2f} MB | {export['int8']['latency_ms']:g} ms | "
                 f"{with_interval(export['test_set']['int8'], 'eer', 100, 2)} % |",
                 f"achieved {scored['achieved_sparsity']:.4f}."):
        assert line in card, line
    layers = json.loads((folder / "task.json").read_text())["structure"]["layers"]
    assert sum(line.startswith(f"| {i} | ") for i in range(len(layers)) for line in card.splitlines()) == len(layers)
    assert (reference_run / "reports" / "cards" / f"{task}.md").read_text() == card
    assert f"Model card of {task}" in (reference_run / "reports" / "report.md").read_text()


@pytest.mark.parametrize("task", TASKS)
def test_the_fp32_graph_scores_the_test_set_as_the_score_stage_did(reference_run, task):
    """The export stage scores its fp32 ONNX graph as `python -m hp` does; the score stage scored the PyTorch model the
    same way (SV: cosine after the training mean; CM: calibrated LLRs). float32 rounding may reorder two nearly tied
    scores, which moves an EER by at most one trial of the smaller class: that is the tolerance."""
    scored = json.loads((reference_run / "metrics" / f"{task}.json").read_text())
    tested = json.loads((reference_run / "metrics" / task / "export.json").read_text())["test_set"]
    if task == "sv":
        name, lists = next(iter(scored["lists"].items()))
        trials = pd.read_parquet(reference_run / "data" / "sv" / "manifests" / "trials.parquet")
        labels = trials.loc[trials["list"] == name, "label"]
        reference, smaller = lists["cosine"], min(labels.sum(), len(labels) - labels.sum())
        assert tested["test_set"] == f"trial list {name}" and tested["trials"] == len(labels)
    else:
        reference, smaller = scored["eval"], min(scored["eval"]["bonafide"], scored["eval"]["spoof"])
        assert tested["test_set"] == "eval" and tested["trials"] == scored["eval"]["utterances"]
    assert tested["fp32"]["eer"] == pytest.approx(reference["eer"], abs=1 / smaller)
    assert 0 < tested["int8"]["eer"] < 1 and set(tested["int8"]) == set(tested["fp32"])


@pytest.mark.parametrize("task", TASKS)
def test_the_cards_onnxruntime_snippet_runs_without_torch(reference_run, task, tmp_path):
    """The card's "onnxruntime and numpy only" block, verbatim, in a process where any import but numpy's,
    onnxruntime's and the standard library's fails, on a 16-bit WAV as the snippet expects."""
    card = (reference_run / "models" / task / "export" / "README.md").read_text()
    block = card.split("With onnxruntime and numpy only")[1].split("```python\n")[1].split("```")[0]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / task).symlink_to(reference_run / "models" / task)
    samples = (np.random.default_rng(0).normal(0, 3000, 24000)).astype(np.int16)
    with wave.open(str(tmp_path / "speech.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes(samples.tobytes())
    output = "embeddings" if task == "sv" else "llrs"
    script = only_importing("numpy", "onnxruntime") + block + f"print({output}.shape)\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("(1")
