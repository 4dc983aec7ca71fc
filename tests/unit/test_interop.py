"""Kaldi data directories and score files for other toolkits."""
import numpy as np
import pandas as pd
import pytest

from hp.data.interop import read_trial_scores, write_cm_scores, write_kaldi_dir, write_trial_scores
from hp.data.manifest import DataError


def _table(utts, speakers):
    return pd.DataFrame({"utt": utts, "path": [f"/data/{u}" for u in utts], "speaker": speakers})


def test_kaldi_dir_is_sorted_and_complete(tmp_path):
    write_kaldi_dir(_table(["id2/b/1.wav", "id1/a/2.wav", "id1/a/1.wav"], ["id2", "id1", "id1"]), tmp_path / "k")
    assert (tmp_path / "k" / "wav.scp").read_text().splitlines() == [
        "id1/a/1.wav /data/id1/a/1.wav", "id1/a/2.wav /data/id1/a/2.wav", "id2/b/1.wav /data/id2/b/1.wav"]
    assert (tmp_path / "k" / "utt2spk").read_text().splitlines() == [
        "id1/a/1.wav id1", "id1/a/2.wav id1", "id2/b/1.wav id2"]
    assert (tmp_path / "k" / "spk2utt").read_text().splitlines() == ["id1 id1/a/1.wav id1/a/2.wav", "id2 id2/b/1.wav"]


def test_kaldi_dir_rejects_what_kaldi_cannot_hold(tmp_path):
    with pytest.raises(DataError, match="path '/data/a b' contains whitespace"):
        write_kaldi_dir(pd.DataFrame({"utt": ["a"], "path": ["/data/a b"], "speaker": ["s"]}), tmp_path / "k")
    with pytest.raises(DataError, match="start with their speaker id"):
        write_kaldi_dir(_table(["u1", "u2"], ["s2", "s1"]), tmp_path / "k")
    assert not (tmp_path / "k").exists()  # nothing half-written


def test_trial_scores_round_trip_and_strict_reading(tmp_path):
    trials = pd.DataFrame({"label": [1, 0], "enroll": ["a.wav", "a.wav"], "test": ["b.wav", "c.wav"]})
    write_trial_scores(trials, np.array([0.5, -0.25]), tmp_path / "s.txt")
    assert (tmp_path / "s.txt").read_text() == "a.wav b.wav 0.500000 target\na.wav c.wav -0.250000 nontarget\n"
    back = read_trial_scores(tmp_path / "s.txt")
    assert back["label"].tolist() == [1, 0] and back["score"].tolist() == [0.5, -0.25]
    (tmp_path / "bad.txt").write_text("a b 0.1 target\na b x target\n")
    with pytest.raises(DataError, match=r"bad.txt:2: score 'x' is not a number"):
        read_trial_scores(tmp_path / "bad.txt")
    (tmp_path / "bad.txt").write_text("a b 0.1 maybe\n")
    with pytest.raises(DataError, match=r"bad.txt:1: expected"):
        read_trial_scores(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="1 scores for 2 trials"):
        write_trial_scores(trials, np.array([0.5]), tmp_path / "s.txt")


def test_cm_scores_in_the_asvspoof5_package_format(tmp_path):
    write_cm_scores(pd.Series(["E_0001", "E_0002"]), np.array([1.5, -2.0]), tmp_path / "cm.tsv")
    assert (tmp_path / "cm.tsv").read_text() == "filename\tcm-score\nE_0001\t1.500000\nE_0002\t-2.000000\n"
