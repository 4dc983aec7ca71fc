"""The corpus-scale benchmark (hp/benchmarks/corpus_scale.py): its VoxCeleb-layout tree and trial lists, and one
run of the real SV stages on a small tree."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hp.benchmarks import corpus_scale as C
from hp.data.manifest import Validation, read_trials
from hp.data.voxceleb import TRIAL_LISTS, voxceleb_tree
from helpers import compact_sv_model

ROOT = Path(__file__).resolve().parents[2]


def test_full_scale_counts_are_voxcelebs():
    spec = C.Spec.scaled(1.0)
    assert (spec.vox1_speakers, spec.vox1_utterances, spec.vox2_speakers, spec.vox2_utterances) == (
        1251, 153_516, 5994, 1_092_009)
    assert (spec.trials_o, spec.trials_e, spec.trials_h) == (37_611, 579_818, 550_894)
    assert C.utterance_counts(5994, 1_092_009).sum() == 1_092_009


@pytest.mark.parametrize("grouped", [False, True])
def test_trials_pair_the_right_speakers(grouped):
    rng = np.random.default_rng(0)
    speaker = np.repeat(np.arange(30), rng.integers(2, 9, 30))
    group = np.arange(30) % 4 if grouped else None
    label, enroll, test = C.draw_trials(speaker, 5001, rng, group)
    assert len(label) == 5001 and label.sum() == 2500
    same = speaker[enroll] == speaker[test]
    assert (same == (label == 1)).all() and (enroll != test).all()
    if grouped:  # a non-target pair shares its group, as VoxCeleb1-H's share nationality and gender
        assert (group[speaker[enroll]] == group[speaker[test]]).all()
    else:
        assert len(np.unique(speaker[test[label == 0]])) > 20  # drawn from anyone else


def test_the_tree_is_voxcelebs_layout_and_cached(tmp_path):
    spec = C.Spec.scaled(0.001)
    corpus, written = C.ensure_corpus(tmp_path, spec, processes=1)
    assert not written["cached"] and C.ensure_corpus(tmp_path, spec)[1]["cached"]
    vox1 = voxceleb_tree(corpus / "voxceleb1" / "wav", "test", Validation(min_seconds=0.1))
    vox2 = voxceleb_tree(corpus / "voxceleb2" / "wav", "train", Validation(min_seconds=0.1))
    assert len(vox1) == spec.vox1_utterances and vox1["speaker"].nunique() == spec.vox1_speakers
    assert len(vox2) == spec.vox2_utterances and not set(vox1["speaker"]) & set(vox2["speaker"])
    assert (vox1["duration_s"] == C.CLIP_SECONDS).all()
    for name, n in zip("OEH", (spec.trials_o, spec.trials_e, spec.trials_h)):
        trials = read_trials(corpus / "voxceleb1" / TRIAL_LISTS[name])
        assert len(trials) == n and set(trials["enroll"]) | set(trials["test"]) <= set(vox1["utt"])
    again = C.speaker_clips(0, 1, 3, 4)
    assert np.array_equal(again, C.speaker_clips(0, 1, 3, 4)) and not np.array_equal(again, C.speaker_clips(0, 1, 4, 4))


@pytest.mark.slow  # three stage processes on a small tree (~1 min)
def test_the_benchmark_runs_the_stages_and_reports_each(tmp_path):
    model = tmp_path / "compact"
    compact_sv_model().save(model)
    (tmp_path / "compact.json").write_text("{}")
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, "-m", "hp.benchmarks", "corpus-scale", "--scale", "0.001", "--root", str(tmp_path),
                    "--model", str(model), "--compact-metrics", str(tmp_path / "compact.json"), "--out", str(out),
                    "--real-length-files", "10", "--json"], cwd=ROOT, check=True, capture_output=True)
    result = json.loads(out.read_text())
    spec = C.Spec.scaled(0.001)
    assert result["files"] == {"train": spec.vox2_utterances, "test": len(set(pd.concat(
        [read_trials(tmp_path / f"voxceleb-{spec.key()}" / "voxceleb1" / TRIAL_LISTS[n])[c]
         for n in "OEH" for c in ("enroll", "test")])))}
    assert result["trials"] == {f"trials {n}": {"listed": k, "kept": k}
                                for n, k in zip("OEH", (spec.trials_o, spec.trials_e, spec.trials_h))}
    assert [s["stage"] for s in result["stages"]] == ["prepare", "manifests", "score"]
    assert all(s["seconds"] > 0 and s["peak_rss_gb"] > 0 for s in result["stages"])
    sections = {s["section"] for s in result["stages"][2]["sections"]}
    assert {"embed test", "embed train", "cosine", "AS-norm statistics and scores", "metrics E asnorm",
            "LTAS baseline", "write scores"} <= sections
    assert set(result["eer"]) == {"O", "E", "H"} and 0 < result["scoring_seconds"] < result["stages"][2]["seconds"]
