"""VoxCeleb as distributed: a small tree in the real layout (wav trees, the three trial lists, MUSAN and
RIRS_NOISES) through prepare and manifests, their strict errors, then the SV stages under DVC."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hp.data import synth
from hp.data.interop import read_trial_scores
from hp.data.manifest import DataError
from hp.errors import ConfigError
from hp.stages.manifests import manifests
from hp.stages.prepare import prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trees(tmp_path_factory, augmentation_trees) -> dict[str, Path]:
    """voxceleb1/{wav,<3 trial lists>}, voxceleb2/wav, musan/{noise,music,speech}, RIRS_NOISES/simulated_rirs."""
    root = tmp_path_factory.mktemp("trees")
    synth.write_sv_corpus(root / "vox", seed=5, train_speakers=6, test_speakers=4, sessions=2,
                          utterances_per_session=2, min_seconds=1.5, max_seconds=2.0)
    vox1 = root / "vox" / "voxceleb1"
    pairs = (vox1 / "veri_test2.txt").read_text().splitlines()  # every pair of the 16 test utterances
    (vox1 / "list_test_all2.txt").write_text("\n".join(pairs) + "\n")
    (vox1 / "veri_test2.txt").write_text("\n".join(pairs[:40]) + "\n")
    (vox1 / "list_test_hard2.txt").write_text("\n".join(pairs[1::3]) + "\n")
    return {"voxceleb1": vox1, "voxceleb2": root / "vox" / "voxceleb2", **augmentation_trees}


def vox_params(trees: dict[str, Path], **changes) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["sv"].update({"corpus": "voxceleb", "trials": ["O", "E", "H"],
                                    "voxceleb1_dir": str(trees["voxceleb1"]), "voxceleb2_dir": str(trees["voxceleb2"]),
                                    "musan_dir": str(trees["musan"]), "rirs_dir": str(trees["rirs"]), **changes})
    return params


def build(params: dict, out: Path) -> dict:
    prepare("sv", params, out / "corpus")
    return manifests("sv", params, out / "corpus", out / "manifests")


def test_manifests_from_voxceleb_trees(trees, tmp_path):
    summary = build(vox_params(trees), tmp_path)
    trials = pd.read_parquet(tmp_path / "manifests" / "trials.parquet")
    lines = {name: (trees["voxceleb1"] / f).read_text().splitlines()
             for name, f in (("O", "veri_test2.txt"), ("E", "list_test_all2.txt"), ("H", "list_test_hard2.txt"))}
    assert summary["trials_per_list"] == {name: len(v) for name, v in lines.items()}
    first_h = lines["H"][0].split()
    assert trials[trials["list"] == "H"].iloc[0][["label", "enroll", "test"]].tolist() == [int(first_h[0]), *first_h[1:]]
    test = pd.read_parquet(tmp_path / "manifests" / "test.parquet")
    assert set(test["utt"]) == set(trials["enroll"]) | set(trials["test"])
    assert test["path"].map(lambda p: Path(p).is_file()).all()
    train = pd.read_parquet(tmp_path / "manifests" / "train.parquet")
    assert train["speaker"].nunique() == 6 and not set(train["speaker"]) & set(test["speaker"])
    musan = pd.read_parquet(tmp_path / "manifests" / "musan.parquet")
    assert sorted(musan["kind"].unique()) == ["music", "noise", "speech"] and len(musan) == 9
    assert len(pd.read_parquet(tmp_path / "manifests" / "rirs.parquet")) == 2
    source = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert source["voxceleb1_dir"] == str(trees["voxceleb1"]) and source["trials"] == ["O", "E", "H"]


def test_trial_naming_a_missing_file_fails_with_file_and_line(trees, tmp_path):
    vox1 = tmp_path / "vox1"
    shutil.copytree(trees["voxceleb1"], vox1)
    lines = (vox1 / "list_test_hard2.txt").read_text().splitlines()
    lines[2] = "0 id10001/s0001/00001.wav id10004/nosuch/00009.wav"
    (vox1 / "list_test_hard2.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"list_test_hard2.txt:3: id10004/nosuch/00009.wav not found under"):
        build(vox_params(trees, voxceleb1_dir=str(vox1)), tmp_path / "out")
    lines[2] = "1 id10001/s0001/00001.wav"
    (vox1 / "list_test_hard2.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"list_test_hard2.txt:3: expected '<1\|0> <enroll> <test>'"):
        build(vox_params(trees, voxceleb1_dir=str(vox1)), tmp_path / "out")
    (vox1 / "list_test_hard2.txt").unlink()
    with pytest.raises(DataError, match=r"list_test_hard2.txt: trial list H not found"):
        build(vox_params(trees, voxceleb1_dir=str(vox1)), tmp_path / "out")
    assert not (tmp_path / "out" / "manifests").exists()  # nothing half-written


def test_drop_invalid_says_per_list_how_many_trials_were_lost(trees, tmp_path):
    """A cut test file with drop_invalid: the trials naming it go, and summary.json (and the report's data line)
    say per official list how many of its trials were kept; blank lines in a list are no trials."""
    from hp.reporting.summary import sv_data

    vox1 = tmp_path / "vox1"
    shutil.copytree(trees["voxceleb1"], vox1)
    (vox1 / "veri_test2.txt").write_text((vox1 / "veri_test2.txt").read_text() + "\n\n")
    lines = {name: (vox1 / f).read_text().strip().splitlines()
             for name, f in (("O", "veri_test2.txt"), ("E", "list_test_all2.txt"), ("H", "list_test_hard2.txt"))}
    bad = lines["O"][0].split()[1]
    cut = vox1 / "wav" / bad
    cut.write_bytes(cut.read_bytes()[:300])  # a WAV header with a few samples: too short now
    params = vox_params(trees, voxceleb1_dir=str(vox1))
    with pytest.raises(DataError, match=rf"1 bad audio file\(s\): {cut}: "):
        build(params, tmp_path / "strict")
    params["manifests"]["drop_invalid"] = True
    summary = build(params, tmp_path / "out")
    lost = {name: sum(bad in line.split()[1:] for line in v) for name, v in lines.items()}
    assert lost["O"] >= 1 and lost["H"] < lost["E"]
    assert {k: v for k, v in summary["kept"].items() if k.startswith("trials")} == {
        f"trials {name}": {"listed": len(v), "kept": len(v) - lost[name]} for name, v in lines.items()}
    assert summary["trials_per_list"] == {name: len(v) - lost[name] for name, v in lines.items()}
    written = json.loads((tmp_path / "out" / "manifests" / "summary.json").read_text())
    assert written["kept"] == summary["kept"] and [d["path"] for d in written["dropped"]] == [str(cut)]
    described = sv_data(summary, 6, "VoxCeleb")
    assert "**not the official lists** (drop_invalid): " in described
    assert f"trials E: {len(lines['E']) - lost['E']:,} of {len(lines['E']):,} kept, {lost['E']} lost" in described


def test_setup_errors_name_the_key_or_directory(trees, tmp_path):
    with pytest.raises(ConfigError, match=r"prepare.sv.train_on includes voxceleb1, which the E and H"):
        build(vox_params(trees, train_on=["voxceleb1", "voxceleb2"]), tmp_path)
    with pytest.raises(ConfigError, match=r"prepare.sv.trials must be a non-empty subset"):
        build(vox_params(trees, trials=["O", "X"]), tmp_path)
    with pytest.raises(ConfigError, match=r"prepare.sv.trials must be a list"):
        build(vox_params(trees, trials="OE"), tmp_path)
    aac_only = tmp_path / "vox2"
    (aac_only / "aac" / "id00001" / "v").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no wav/ directory .*python -m hp.data.convert .*/aac .*/wav"):
        build(vox_params(trees, voxceleb2_dir=str(aac_only)), tmp_path)
    shutil.copytree(trees["voxceleb2"] / "wav", aac_only / "wav")  # a conversion stopped one file short
    for wav in (aac_only / "wav").glob("*/*/*.wav"):
        m4a = aac_only / "aac" / wav.relative_to(aac_only / "wav").with_suffix(".m4a")
        m4a.parent.mkdir(parents=True, exist_ok=True)
        m4a.write_bytes(b"")
    (aac_only / "aac" / "id00001" / "v" / "00009.m4a").write_bytes(b"")
    with pytest.raises(DataError, match=r"1 of the 25 files under .*/aac are not converted \(e.g. "
                                        r"id00001/v/00009.wav\); finish with: python -m hp.data.convert"):
        build(vox_params(trees, voxceleb2_dir=str(aac_only)), tmp_path)
    mini = yaml.safe_load((ROOT / "params.yaml").read_text())
    mini["prepare"]["sv"]["voxceleb1_dir"] = str(trees["voxceleb1"])
    with pytest.raises(ConfigError, match=r"prepare.sv.voxceleb1_dir is set but corpus is 'mini'"):
        build(mini, tmp_path)
    del mini["prepare"]["sv"]["mini"]
    mini["prepare"]["sv"]["voxceleb1_dir"] = None
    with pytest.raises(ConfigError, match=r"missing key prepare.sv.mini \(corpus mini\)"):
        build(mini, tmp_path)
    without_mini = vox_params(trees, trials=["O"])
    del without_mini["prepare"]["sv"]["mini"]  # a VoxCeleb params file need not carry the mini corpus's group
    assert build(without_mini, tmp_path / "ok")["trials_per_list"] == {"O": 40}


def test_training_speakers_must_not_be_tested(trees, tmp_path):
    vox2 = tmp_path / "vox2"
    shutil.copytree(trees["voxceleb2"], vox2)
    shutil.copytree(trees["voxceleb1"] / "wav" / "id10002", vox2 / "wav" / "id10002")
    with pytest.raises(DataError, match=r"1 speaker\(s\) both in training and in the trial lists, e.g. id10002"):
        build(vox_params(trees, voxceleb2_dir=str(vox2)), tmp_path)


def test_voxceleb1_dev_speakers_train_with_o_only(trees, tmp_path):
    vox1 = tmp_path / "vox1"
    shutil.copytree(trees["voxceleb1"], vox1)
    o = [line for line in (vox1 / "list_test_all2.txt").read_text().splitlines()
         if all(u.split("/")[0] in ("id10001", "id10002") for u in line.split()[1:])]
    (vox1 / "veri_test2.txt").write_text("\n".join(o) + "\n")
    build(vox_params(trees, voxceleb1_dir=str(vox1), trials=["O"], train_on=["voxceleb1", "voxceleb2"]), tmp_path)
    train = pd.read_parquet(tmp_path / "manifests" / "train.parquet")
    # VoxCeleb1's speakers outside the O list (its "dev" part) join VoxCeleb2's six
    assert set(train["speaker"]) == {f"id0000{i}" for i in range(1, 7)} | {"id10003", "id10004"}


@pytest.mark.pipeline  # runs `dvc repro` in a scratch repository (`make test-fast` skips it)
def test_sv_stages_on_voxceleb_under_dvc(trees, tmp_path):
    """prepare -> manifests -> warmup -> finetune -> compact -> score on the VoxCeleb-shaped tree, with MUSAN/RIR
    augmentation, the frozen-front-end phase, ECAPA-TDNN, checkpoint averaging and QMF."""
    from pipeline_repo import make_repo, run

    params = vox_params(trees)
    params["warmup"]["sv"].update(epochs=2, batch_size=4, crop_seconds=1.0)
    params["runtime"]["log_every"] = 2
    params["finetune"]["sv"].update(epochs=6, batch_size=4, crop_seconds=1.0, warmup_epochs=1,
                                    sparsity_warmup_epochs=3, average_last=2, lr_reference_batch=8,
                                    margin_start_epoch=0, margin_full_epoch=2)
    params["finetune"]["sv"]["head"].update(backend="ecapa", ecapa_channels=16, ecapa_mfa_channels=40, embedding=16)
    params["score"]["sv"].update(qmf_trials=100)
    params["sparsity_tolerance"] = None  # 6 epochs bring the gates near the target, not within 0.01 of it
    repo = make_repo(tmp_path, params)
    run(["dvc", "repro", "score@sv"], repo)

    warm = json.loads((repo / "metrics" / "sv" / "warmup.json").read_text())
    assert warm["epochs"] == 2 and warm["augmentation"] and (repo / "models/sv/warmup/head.safetensors").is_file()
    fine = json.loads((repo / "metrics" / "sv" / "finetune.json").read_text())
    assert fine["augmentation"]
    # the rate scales by the global batch over lr_reference_batch (4 / 8): after the 1-epoch warm-up of 6 it is
    # 0.5 lr0 (lrT / lr0)^(i / T)
    lr0, lr_t, total = params["finetune"]["sv"]["lr"], params["finetune"]["sv"]["final_lr"], fine["steps"]
    curve = pd.read_csv(repo / "dvclive" / "sv" / "plots" / "metrics" / "lr.tsv", sep="\t")
    after = curve[curve["step"] >= total / 6]
    assert len(after) > 2
    np.testing.assert_allclose(after["lr"], 0.5 * lr0 * (lr_t / lr0) ** (after["step"] / total), rtol=1e-9)
    margins = pd.read_csv(repo / "dvclive" / "sv" / "plots" / "metrics" / "margin.tsv", sep="\t")["margin"]
    assert margins.iloc[0] == 0.0 and margins.iloc[-1] == pytest.approx(0.2)
    sv = json.loads((repo / "metrics" / "sv.json").read_text())
    assert set(sv["lists"]) == {"O", "E", "H"} and sv["qmf_trials"] == 100 and sv["asnorm_top_n"] == 6
    for name, counts in sv["lists"].items():
        assert {"cosine", "asnorm", "qmf"} <= set(counts)
        assert all(0 <= counts[kind]["eer"] <= 1 for kind in ("cosine", "asnorm", "qmf"))
        exported = read_trial_scores(repo / "scores" / "sv" / f"{name}.txt")
        assert len(exported) == counts["trials"]
    scores = pd.read_parquet(repo / "scores" / "sv" / "scores.parquet")
    o = scores[scores["list"] == "O"]
    assert np.allclose(read_trial_scores(repo / "scores" / "sv" / "O.txt")["score"], o["score_qmf"], atol=1e-6)
