"""ASVspoof as distributed: small ASVspoof5- and 2019-LA-shaped trees (protocol lines in the released formats,
FLAC audio) through prepare and manifests, the strict protocol errors, CM scoring with calibration, and the CM
stages under DVC."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

import hp
from hp.data.manifest import DataError
from hp.errors import ConfigError
from hp.evaluation import metrics
from hp.evaluation.bootstrap import Bootstrap
from hp.evaluation.calibration import fit_logistic
from hp.evaluation.scoring import cm_breakdown, score_cm, seen_attacks
from hp.heads.losses import SoftmaxClassifier
from hp.stages.manifests import manifests
from hp.stages.prepare import prepare
from hp.tasks import CM_LABELS, TaskModel
from configs import head_config

ROOT = Path(__file__).resolve().parents[2]
SR = 16000
# per split: (file-name prefix, attacks, codecs) -- dev and eval attacks differ from train's, as in ASVspoof5
SPLITS = {"train": ("T", ("A01", "A02"), ("-",)), "dev": ("D", ("A09", "A10"), ("-",)),
          "eval": ("E", ("A17", "A18"), ("-", "C05"))}
ASVSPOOF5 = {"protocols": {"train": "ASVspoof5.train.tsv", "dev": "ASVspoof5.dev.track_1.tsv",
                           "eval": "ASVspoof5.eval.track_1.tsv"},
             "audio": {"train": "flac_T", "dev": "flac_D", "eval": "flac_E_eval"}}
LA2019 = {"protocols": {"train": "ASVspoof2019.LA.cm.train.trn.txt", "dev": "ASVspoof2019.LA.cm.dev.trl.txt",
                        "eval": "ASVspoof2019.LA.cm.eval.trl.txt"}}


def _flac(path: Path, seed: int, bonafide: bool) -> None:
    """1.5 s of noise: bona fide low-passed (a running mean), spoof white, so the classes are learnable."""
    rng = np.random.default_rng(seed)
    wave = rng.normal(0, 0.1, int(1.5 * SR))
    if bonafide:
        wave = np.convolve(wave, np.ones(8) / 8 * 3, mode="same")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SR, format="FLAC", subtype="PCM_16")


def _utterances(split: str, per_class: int = 6):
    """(speaker, name, gender, codec, attack or None) of one split: 2 speakers, bona fide and spoof alternating."""
    prefix, attacks, codecs = SPLITS[split]
    for i in range(2 * per_class):
        attack = None if i % 2 == 0 else attacks[(i // 2) % len(attacks)]
        yield (f"{prefix}_{i % 2:04d}", f"{prefix}_{i:010d}", "MF"[i % 2], codecs[(i // 2) % len(codecs)], attack)


@pytest.fixture(scope="module")
def cm_trees(tmp_path_factory, augmentation_trees) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cm_trees")
    five, la = root / "asvspoof5", root / "LA2019" / "LA"
    for s, split in enumerate(SPLITS):
        lines5, lines19 = [], []
        for k, (speaker, name, gender, codec, attack) in enumerate(_utterances(split)):
            key = "bonafide" if attack is None else "spoof"
            tag = "-" if attack is None else f"AC{attack[-1]}"
            lines5.append(f"{speaker} {name} {gender} {codec} - - {tag} {attack or 'bonafide'} {key} -")
            _flac(five / ASVSPOOF5["audio"][split] / f"{name}.flac", 1000 * s + k, attack is None)
            la_name = f"LA_{name}"
            lines19.append(f"LA_{speaker[2:]} {la_name} - {attack or '-'} {key}")
            _flac(la / f"ASVspoof2019_LA_{split}" / "flac" / f"{la_name}.flac", 1000 * s + k, attack is None)
        (five / "ASVspoof5_protocols").mkdir(parents=True, exist_ok=True)
        (five / "ASVspoof5_protocols" / ASVSPOOF5["protocols"][split]).write_text("\n".join(lines5) + "\n")
        (la / "ASVspoof2019_LA_cm_protocols").mkdir(parents=True, exist_ok=True)
        (la / "ASVspoof2019_LA_cm_protocols" / LA2019["protocols"][split]).write_text("\n".join(lines19) + "\n")
    return {"asvspoof5": five, "asvspoof2019la": la.parent, **augmentation_trees}


def cm_params(trees: dict[str, Path], corpus: str = "asvspoof5", **changes) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["cm"].update({"corpus": corpus, "asvspoof5_dir": str(trees["asvspoof5"]),
                                    "asvspoof2019_dir": str(trees["asvspoof2019la"]),
                                    "musan_dir": str(trees["musan"]), "rirs_dir": str(trees["rirs"]), **changes})
    return params


def build(params: dict, out: Path) -> dict:
    prepare("cm", params, out / "corpus")
    return manifests("cm", params, out / "corpus", out / "manifests")


@pytest.mark.parametrize("corpus", ["asvspoof5", "asvspoof2019la"])
def test_manifests_from_released_trees(cm_trees, tmp_path, corpus):
    summary = build(cm_params(cm_trees, corpus), tmp_path)
    assert {k: summary[k] for k in ("train", "dev", "eval", "musan", "rirs")} == {
        "train": 12, "dev": 12, "eval": 12, "musan": 9, "rirs": 2}
    for split, (_, attacks, codecs) in SPLITS.items():
        table = pd.read_parquet(tmp_path / "manifests" / f"{split}.parquet")
        expected = list(_utterances(split))
        assert list(table["utt"]) == [("LA_" if corpus == "asvspoof2019la" else "") + e[1] for e in expected]
        assert list(table["label"]) == ["bonafide" if e[4] is None else "spoof" for e in expected]
        assert table["path"].map(lambda p: Path(p).is_file()).all() and (table["duration_s"] == 1.5).all()
        spoofs = table[table["label"] == "spoof"]
        assert sorted(spoofs["attack"].unique()) == list(attacks)
        if corpus == "asvspoof5":  # kept as released: codec and gender too
            assert list(table["codec"]) == [e[3] for e in expected]
            assert list(table["gender"]) == [e[2] for e in expected]
            assert set(table.loc[table["label"] == "bonafide", "attack"]) == {"bonafide"}
        else:  # 2019 LA has neither column; SYSTEM_ID '-' marks bona fide
            assert set(table["codec"]) == {"-"} == set(table["gender"])
            assert set(table.loc[table["label"] == "bonafide", "attack"]) == {"-"}
    source = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert source["corpus"] == corpus and source["corpus_dir"] == str(cm_trees[corpus])


def test_2019la_root_may_be_the_la_directory(cm_trees, tmp_path):
    summary = build(cm_params(cm_trees, "asvspoof2019la", asvspoof2019_dir=str(cm_trees["asvspoof2019la"] / "LA")),
                    tmp_path)
    assert summary["eval"] == 12


def test_protocols_at_the_top_of_the_asvspoof5_directory(cm_trees, tmp_path):
    five = tmp_path / "five"
    shutil.copytree(cm_trees["asvspoof5"], five)
    for f in (five / "ASVspoof5_protocols").iterdir():
        f.rename(five / f.name)
    (five / "ASVspoof5_protocols").rmdir()
    assert build(cm_params(cm_trees, asvspoof5_dir=str(five)), tmp_path / "out")["dev"] == 12


@pytest.mark.parametrize("corpus,line,edit,match", [
    ("asvspoof5", 3, lambda cols: cols[:8], r"ASVspoof5.dev.track_1.tsv:3: expected 10 space-separated columns, got 8"),
    ("asvspoof5", 2, lambda cols: cols[:8] + ["fake", "-"], r"ASVspoof5.dev.track_1.tsv:2: KEY is 'fake'"),
    ("asvspoof5", 4, lambda cols: cols[:1] + ["D_0000000000"] + cols[2:],
     r"ASVspoof5.dev.track_1.tsv:4: D_0000000000 is listed twice \(first at line 1\)"),
    ("asvspoof5", 5, lambda cols: cols[:1] + ["D_0000000099"] + cols[2:],
     r"ASVspoof5.dev.track_1.tsv:5: .*flac_D/D_0000000099.flac not found \(1 of the protocol's 12 files"),
    ("asvspoof2019la", 6, lambda cols: cols + ["extra"],
     r"ASVspoof2019.LA.cm.dev.trl.txt:6: expected 5 space-separated columns, got 6"),
    ("asvspoof2019la", 2, lambda cols: cols[:4] + ["genuine"], r"ASVspoof2019.LA.cm.dev.trl.txt:2: KEY is 'genuine'"),
])
def test_bad_protocol_lines_fail_with_file_and_line(cm_trees, tmp_path, corpus, line, edit, match):
    tree = tmp_path / "tree"
    shutil.copytree(cm_trees[corpus], tree)
    (protocol,) = tree.rglob(ASVSPOOF5["protocols"]["dev"] if corpus == "asvspoof5" else LA2019["protocols"]["dev"])
    lines = protocol.read_text().splitlines()
    lines[line - 1] = " ".join(edit(lines[line - 1].split()))
    protocol.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match):
        build(cm_params(cm_trees, corpus, **{f"{'asvspoof5' if corpus == 'asvspoof5' else 'asvspoof2019'}_dir":
                                             str(tree)}), tmp_path / "out")
    assert not (tmp_path / "out" / "manifests").exists()  # nothing half-written


@pytest.mark.parametrize("corpus", ["asvspoof5", "asvspoof2019la"])
def test_blank_protocol_lines_are_skipped_and_lines_keep_their_numbers(cm_trees, tmp_path, corpus):
    tree = tmp_path / "tree"
    shutil.copytree(cm_trees[corpus], tree)
    (protocol,) = tree.rglob(ASVSPOOF5["protocols"]["dev"] if corpus == "asvspoof5" else LA2019["protocols"]["dev"])
    lines = protocol.read_text().splitlines()
    protocol.write_text("\n".join(lines[:2] + ["", "  "] + lines[2:]) + "\n\n")
    key = f"{'asvspoof5' if corpus == 'asvspoof5' else 'asvspoof2019'}_dir"
    assert build(cm_params(cm_trees, corpus, **{key: str(tree)}), tmp_path / "out")["dev"] == len(lines)
    (missing,) = [f for f in tree.rglob("*.flac") if f.stem == lines[2].split()[1]]
    missing.unlink()  # the protocol's third row, now on line 5
    with pytest.raises(DataError, match=rf"{protocol.name}:5: .*{missing.name} not found"):
        build(cm_params(cm_trees, corpus, **{key: str(tree)}), tmp_path / "out2")


def test_a_flac_cut_mid_stream_fails_the_manifests_stage_naming_it(cm_trees, tmp_path):
    """Its header still gives the full length, so only decoding finds it: by default (check_audio: decode) the
    manifests stage does; with headers only it passes, and the read in training or scoring names the file."""
    from hp.data.audio import read_audio

    tree = tmp_path / "tree"
    shutil.copytree(cm_trees["asvspoof5"], tree)
    cut = sorted(tree.rglob("flac_D/*.flac"))[3]
    whole, frames = cut.read_bytes(), sf.info(cut).frames
    cut.write_bytes(whole[: len(whole) // 2])
    assert sf.info(cut).frames == frames  # the header is intact
    params = cm_params(cm_trees, asvspoof5_dir=str(tree))
    assert params["manifests"]["check_audio"] == "decode"
    with pytest.raises(DataError, match=rf"ASVspoof5.dev.track_1.tsv: 1 bad audio file\(s\): {cut}: unreadable "
                                        r"\(Error : flac decoder lost sync"):
        build(params, tmp_path / "decoded")
    assert not (tmp_path / "decoded" / "manifests").exists()
    params["manifests"]["check_audio"] = "header"
    assert build(params, tmp_path / "headers")["dev"] == 12
    with pytest.raises(DataError, match=rf"^{cut}: cannot read audio \("):
        read_audio(str(cut), start=16000, frames=8000)
    params["manifests"]["drop_invalid"], params["manifests"]["check_audio"] = True, "decode"
    summary = build(params, tmp_path / "dropped")
    assert summary["dev"] == 11 and [d["path"] for d in summary["dropped"]] == [str(cut)]
    assert summary["kept"] == {"train": {"listed": 12, "kept": 12}, "dev": {"listed": 12, "kept": 11},
                               "eval": {"listed": 12, "kept": 12}}
    from hp.reporting.summary import cm_data
    assert cm_data(summary, 2, "ASVspoof 5").endswith("**not the official lists** (drop_invalid): dev: 11 of 12 "
                                                      "kept, 1 lost")


def test_decoding_fewer_frames_than_the_header_gives_is_a_bad_file(tmp_path, monkeypatch):
    """A decoder that stops early without an error (no FLAC here does; other formats may) is caught by the count."""
    from hp.data.manifest import Validation

    path = tmp_path / "short.flac"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    real_read = sf.SoundFile.read
    monkeypatch.setattr(sf.SoundFile, "read", lambda self, frames=-1, **kw: real_read(self, min(frames, 4000), **kw)
                        if self.tell() == 0 else real_read(self, 0, **kw))
    with pytest.raises(DataError, match=r"short.flac: unreadable \(decodes to 4000 of the 16000 frames its header"):
        Validation(min_seconds=0.1).check(pd.DataFrame({"path": [str(path)]}), "list.txt")


def test_missing_files_and_bad_settings_are_named(cm_trees, tmp_path):
    five = tmp_path / "five"
    shutil.copytree(cm_trees["asvspoof5"], five)
    (five / "ASVspoof5_protocols" / ASVSPOOF5["protocols"]["eval"]).unlink()
    with pytest.raises(DataError, match=r"no ASVspoof5.eval.track_1.tsv \(looked in .*ASVspoof5_protocols, "):
        build(cm_params(cm_trees, asvspoof5_dir=str(five)), tmp_path / "out")
    shutil.copy(cm_trees["asvspoof5"] / "ASVspoof5_protocols" / ASVSPOOF5["protocols"]["eval"],
                five / "ASVspoof5_protocols")
    shutil.rmtree(five / "flac_E_eval")
    with pytest.raises(DataError, match=r"flac_E_eval: the eval audio directory is missing"):
        build(cm_params(cm_trees, asvspoof5_dir=str(five)), tmp_path / "out")
    with pytest.raises(DataError, match=r"nosuch: asvspoof5_dir is not a directory"):
        build(cm_params(cm_trees, asvspoof5_dir=str(tmp_path / "nosuch")), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"prepare.cm.asvspoof2019_dir is null; corpus asvspoof2019la needs it"):
        build(cm_params(cm_trees, "asvspoof2019la", asvspoof2019_dir=None), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"prepare.cm.corpus must be one of \['mini', 'asvspoof5', 'asvspoof20"):
        build(cm_params(cm_trees, "asvspoof2021"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"unknown key prepare.cm.asvspoof_dir"):
        build(cm_params(cm_trees, asvspoof_dir="x"), tmp_path / "out")
    with pytest.raises(ConfigError, match=r"unknown key prepare.cm.corpus_dir"):  # written, not read
        build(cm_params(cm_trees, corpus_dir="x"), tmp_path / "out")
    with pytest.raises(DataError, match=r"musan_dir is not a directory"):
        build(cm_params(cm_trees, musan_dir=str(tmp_path / "nomusan")), tmp_path / "out")
    mini = yaml.safe_load((ROOT / "params.yaml").read_text())
    del mini["prepare"]["cm"]["mini"]
    with pytest.raises(ConfigError, match=r"missing key prepare.cm.mini \(corpus mini\)"):
        build(mini, tmp_path / "out")
    one_class = tmp_path / "one"
    shutil.copytree(cm_trees["asvspoof5"], one_class)
    protocol = one_class / "ASVspoof5_protocols" / ASVSPOOF5["protocols"]["dev"]
    protocol.write_text("".join(line + "\n" for line in protocol.read_text().splitlines() if "spoof" not in line))
    with pytest.raises(DataError, match=r"ASVspoof5.dev.track_1.tsv: no spoof utterances left; dev needs both"):
        build(cm_params(cm_trees, asvspoof5_dir=str(one_class)), tmp_path / "out")
    assert not (tmp_path / "out" / "manifests").exists()


def test_mini_corpus_moves_with_its_directory(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["cm"]["mini"].update(train_speakers=2, test_speakers=1, bonafide_per_speaker=1,
                                           spoofed_per_speaker=2, test_bonafide_per_speaker=1,
                                           test_spoofed_per_speaker=2, min_seconds=1.0, max_seconds=1.2)
    prepare("cm", params, tmp_path / "a" / "corpus")
    assert json.loads((tmp_path / "a" / "corpus" / "corpus.json").read_text())["corpus_dir"] == "."
    shutil.move(tmp_path / "a" / "corpus", tmp_path / "b")
    summary = manifests("cm", params, tmp_path / "b", tmp_path / "manifests")
    assert (summary["train"], summary["dev"], summary["eval"]) == (6, 3, 3)
    dev = pd.read_parquet(tmp_path / "manifests" / "dev.parquet")
    assert dev["path"].str.startswith(str(tmp_path / "b" / "flac_D")).all()
    (tmp_path / "b" / "corpus.json").write_text(json.dumps({"corpus": "asvspoof5", "corpus_dir": 5}))
    with pytest.raises(DataError, match=r"corpus.json: malformed \(TypeError"):
        manifests("cm", params, tmp_path / "b", tmp_path / "manifests")
    (tmp_path / "b" / "corpus.json").write_text(json.dumps({"corpus": "asvspoof2021", "corpus_dir": "."}))
    with pytest.raises(DataError, match=r"corpus.json: malformed \(ValueError: corpus must be one of"):
        manifests("cm", params, tmp_path / "b", tmp_path / "manifests")


# ---- model and scoring ----------------------------------------------------------------------------------
def test_class_weights_weight_the_cross_entropy():
    torch.manual_seed(0)
    head = SoftmaxClassifier(4, 2, weights=[0.1, 0.9])
    x, y = torch.randn(10, 4), torch.tensor([0, 1] * 5)
    logp = torch.log_softmax(head.logits(x), dim=1)[torch.arange(10), y]
    w = torch.tensor([0.1, 0.9])[y]
    assert torch.allclose(head(x, y), -(w * logp).sum() / w.sum())
    assert "weights" not in head.state_dict()  # they come from the config, checkpoints keep one layout
    model = TaskModel("cm", hp.Frontend(hp.SHAPES["tiny"]), list(CM_LABELS),
                      head_config(heads=2, compression=8, embedding=8, class_weights={"bonafide": 0.9, "spoof": 0.1}))
    assert model.loss.weights.tolist() == pytest.approx([0.1, 0.9])  # in CM_LABELS order: spoof, bona fide
    with pytest.raises(ValueError, match="class_weights must name each of the labels"):
        TaskModel("cm", hp.Frontend(hp.SHAPES["tiny"]), list(CM_LABELS), head_config(class_weights={"bonafide": 1.0}))
    with pytest.raises(ValueError, match="class_weights must be null or a mapping"):
        head_config(class_weights={"bonafide": -1.0, "spoof": 1.0})


def test_cm_projection_is_batch_norm_relu_linear_as_the_authors():
    """wedefense's softmax projection: BatchNorm1d -> ReLU -> Linear on the embedding, the batch's own statistics
    in training (biased variance, eps 1e-5), the running ones in eval (an affine map: one utterance alone gives
    its score)."""
    torch.manual_seed(0)
    head = SoftmaxClassifier(6, 2)
    with torch.no_grad():
        head.norm.weight.uniform_(0.5, 1.5)
        head.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(8, 6) * 3 + 1
    normed = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5) * head.norm.weight + head.norm.bias
    expected = torch.relu(normed) @ head.linear.weight.T + head.linear.bias
    torch.testing.assert_close(head.train().logits(x), expected)
    torch.testing.assert_close(head.norm.running_mean, 0.1 * x.mean(0))  # momentum 0.1 from zero
    head.eval()
    running = ((x - head.norm.running_mean) / torch.sqrt(head.norm.running_var + 1e-5) * head.norm.weight
               + head.norm.bias)
    torch.testing.assert_close(head.logits(x), torch.relu(running) @ head.linear.weight.T + head.linear.bias)
    torch.testing.assert_close(head.logits(x[:1]), head.logits(x)[:1])
    model = TaskModel("cm", hp.Frontend(hp.SHAPES["tiny"]), list(CM_LABELS), head_config(heads=2, compression=8,
                                                                                        embedding=8))
    assert [type(m).__name__ for m in model.loss.children()] == ["BatchNorm1d", "Linear"]
    assert {k for k in model.state_dict() if k.startswith("loss.")} == {
        "loss.norm.weight", "loss.norm.bias", "loss.norm.running_mean", "loss.norm.running_var",
        "loss.norm.num_batches_tracked", "loss.linear.weight", "loss.linear.bias"}


def test_breakdown_per_attack_and_codec_matches_direct_metrics():
    rng = np.random.default_rng(0)
    n = 400
    rows = pd.DataFrame({"label": np.where(rng.random(n) < 0.3, "bonafide", "spoof"),
                         "attack": rng.choice(["A17", "A18", "A19"], n), "codec": rng.choice(["-", "C01", "C02"], n)})
    rows.loc[rows["label"] == "bonafide", "attack"] = "bonafide"
    rows.loc[(rows["codec"] == "C02"), "label"] = "spoof"  # a codec group with one class
    rows.loc[(rows["codec"] == "C02"), "attack"] = "A19"
    llrs = rng.normal(np.where(rows["label"] == "bonafide", 2.0, -1.0), 1.5)
    out = cm_breakdown(rows, llrs)
    bona = (rows["label"] == "bonafide").to_numpy()
    for attack in ("A17", "A18", "A19"):
        keep = bona | (rows["attack"] == attack).to_numpy()
        got = out["attacks"][attack]
        assert got["spoofs"] == int((rows["attack"] == attack).sum())
        assert got["eer"] == metrics.eer(llrs[keep], bona[keep])
        assert got["act_dcf"] == metrics.act_dcf(llrs[keep], bona[keep], 0.95, 1, 10)
        assert got["cllr"] == metrics.cllr(llrs[keep], bona[keep])
    keep = (rows["codec"] == "C01").to_numpy()
    assert out["codecs"]["C01"]["min_dcf"] == metrics.min_dcf(llrs[keep], bona[keep], 0.95, 1, 10)
    assert out["codecs"]["C02"] == {"bonafide": 0, "spoof": int((rows["codec"] == "C02").sum())}
    assert set(out["attacks"]) == {"A17", "A18", "A19"}  # bona fide's own ATTACK_LABEL is not an attack


def test_breakdown_marks_unseen_attacks_and_pools_them():
    """By hand: training carries A01 and A02 (its bona fide rows' ATTACK_LABEL is no attack), so eval's A17 and
    A18 are unseen. Bona fide LLRs 1, 2, 3, 4; A01's spoofs -3, -2 lie below them all; the unseen spoofs -1, 0
    (A18), 2.5 (A17), 5 (A18): between 2 and 2.5 half the bona fide are missed and half the unseen spoofs accepted,
    so their pooled EER is 1/2 (with A01's spoofs in, all spoofs together, it is lower)."""
    train = pd.DataFrame({"label": ["bonafide", "spoof", "spoof", "spoof"],
                          "attack": ["bonafide", "A01", "A02", "A01"]})
    assert seen_attacks(train) == {"A01", "A02"}
    rows = pd.DataFrame({"label": ["bonafide"] * 4 + ["spoof"] * 6,
                         "attack": ["bonafide"] * 4 + ["A01", "A01", "A18", "A18", "A17", "A18"], "codec": "-"})
    llrs = np.array([1.0, 2.0, 3.0, 4.0, -3.0, -2.0, -1.0, 0.0, 2.5, 5.0])
    out = cm_breakdown(rows, llrs, seen_attacks(train))
    assert {a: m["unseen"] for a, m in out["attacks"].items()} == {"A01": False, "A17": True, "A18": True}
    pooled = out["unseen"]
    assert (pooled["attacks"], pooled["bonafide"], pooled["spoofs"]) == (["A17", "A18"], 4, 4)
    keep = np.array([True] * 4 + [False, False, True, True, True, True])
    bona = (rows["label"] == "bonafide").to_numpy()
    assert pooled["eer"] == metrics.eer(llrs[keep], bona[keep]) == 0.5 > metrics.eer(llrs, bona)
    assert pooled["min_dcf"] == metrics.min_dcf(llrs[keep], bona[keep], 0.95, 1, 10)
    assert pooled["cllr"] == metrics.cllr(llrs[keep], bona[keep])
    assert out["attacks"]["A01"]["eer"] == 0.0  # the seen attack alone is separated
    # every attack seen: the pool is empty and has no metrics; without `seen`, no marking at all
    everything = cm_breakdown(rows, llrs, {"A01", "A17", "A18"})["unseen"]
    assert everything == {"attacks": [], "bonafide": 4, "spoofs": 0}
    plain = cm_breakdown(rows, llrs)
    assert "unseen" not in plain and all("unseen" not in m for m in plain["attacks"].values())


def _manifest(split: str, n: int, seed: int, tmp_path: Path) -> pd.DataFrame:
    rows = []
    for i in range(n):
        bonafide = i % 3 == 0
        path = tmp_path / split / f"{i}.flac"
        _flac(path, seed + i, bonafide)
        rows.append({"utt": f"{split}{i}", "path": str(path), "speaker": "s", "duration_s": 1.5, "split": split,
                     "label": "bonafide" if bonafide else "spoof", "attack": "bonafide" if bonafide else "A01",
                     "codec": "-", "gender": "F"})
    return pd.DataFrame(rows)


def test_score_cm_calibrates_on_dev_and_applies_to_eval(tmp_path):
    torch.manual_seed(0)
    model = TaskModel("cm", hp.Frontend(hp.SHAPES["tiny"]), list(CM_LABELS),
                      head_config(heads=2, compression=8, embedding=8)).eval()
    with torch.no_grad():  # make the untrained model's logit difference vary between utterances
        model.loss.linear.weight.mul_(50)
    dev, evaluation = _manifest("dev", 24, 0, tmp_path), _manifest("eval", 18, 100, tmp_path)
    evaluation.loc[evaluation.index[2::3], "attack"] = "A17"  # an attack the training manifest lacks
    train = dev.assign(split="train")
    table, calibration, results = score_cm(model, dev, evaluation, batch_seconds=6.0, prior=0.5, train=train)
    assert list(table["utt"]) == list(dev["utt"]) + list(evaluation["utt"])
    assert np.allclose(table["score_llr"], calibration.llr(table["score_raw"].to_numpy()))
    for split, rows in table.groupby("split"):
        y = (rows["label"] == "bonafide").to_numpy()
        assert results[split]["cllr"] == pytest.approx(metrics.cllr(rows["score_llr"], y))
        assert results[split]["raw"]["cllr"] == pytest.approx(metrics.cllr(rows["score_raw"], y))
        assert results[split]["bonafide"] == y.sum() and results[split]["utterances"] == len(y)
    assert results["dev"]["unseen"] == {"attacks": [], "bonafide": 8, "spoofs": 0}
    rows = table[table["split"] == "eval"]
    pooled = (rows["label"] == "bonafide") | (rows["attack"] == "A17")
    y = (rows["label"] == "bonafide").to_numpy()[pooled.to_numpy()]
    unseen = results["eval"]["unseen"]
    assert (unseen["attacks"], unseen["bonafide"], unseen["spoofs"]) == (["A17"], 6, 6)
    assert unseen["eer"] == pytest.approx(metrics.eer(rows["score_llr"].to_numpy()[pooled.to_numpy()], y))
    assert results["eval"]["attacks"]["A17"]["unseen"] and not results["eval"]["attacks"]["A01"]["unseen"]
    # fitted at prior 0.5 on dev, the regression minimises dev's Cllr: no worse than the raw scores, nor than
    # the uninformative LLR 0 (1 bit), up to the fit's tiny L2 penalty
    dev_result = results["dev"]
    assert dev_result["cllr"] <= min(1.0, dev_result["raw"]["cllr"]) + 1e-6
    # fitted on dev's raw scores only (not on eval's)
    y = (dev["label"] == "bonafide").to_numpy()
    refit = fit_logistic(table["score_raw"].to_numpy()[:24], y, prior=0.5)
    assert calibration.weights == pytest.approx(refit.weights) and calibration.bias == pytest.approx(refit.bias)
    default = score_cm(model, dev, evaluation, batch_seconds=6.0)[1]
    assert default.prior == pytest.approx(0.95 / 1.45)  # the DCF's effective prior
    # with a bootstrap: intervals beside each split's EER and minDCF, the utterances' speakers in the table
    dev["speaker"], evaluation["speaker"] = [f"d{i % 4}" for i in range(24)], [f"e{i % 3}" for i in range(18)]
    table, _, boot = score_cm(model, dev, evaluation, batch_seconds=6.0, prior=0.5, train=train,
                              bootstrap=Bootstrap(50, 0))
    assert table["speaker"].tolist() == dev["speaker"].tolist() + evaluation["speaker"].tolist()
    assert boot["bootstrap"]["speakers"] == {"dev": 4, "eval": 3} and boot["bootstrap"]["resamples"] == 50
    for split in ("dev", "eval"):
        lo, hi = boot[split]["eer_ci95"]["lo"], boot[split]["eer_ci95"]["hi"]
        assert 0 <= lo <= hi <= 1 and boot[split]["eer"] == results[split]["eer"]
        assert set(boot[split]["min_dcf_ci95"]) == {"lo", "hi"}


# ---- the CM stages under DVC ------------------------------------------------------------------------------
@pytest.mark.pipeline  # runs `dvc repro` in a scratch repository (`make test-fast` skips it)
@pytest.mark.parametrize("corpus", ["asvspoof5", "asvspoof2019la"])
def test_cm_stages_on_released_trees_under_dvc(cm_trees, tmp_path, corpus):
    """prepare -> manifests -> warmup (skipped) -> finetune -> compact -> score@cm on each tree, with MUSAN/RIR
    augmentation and class weights. On ASVspoof5 the finetune stage runs on 2 processes (runtime.nproc_per_node):
    it relaunches itself through torchrun, rank 0 alone writes the outputs and curves, and the checkpoint is gone
    once they are written."""
    from pipeline_repo import make_repo, run

    params = cm_params(cm_trees, corpus)
    params["finetune"]["cm"].update(epochs=3, batch_size=4, crop_seconds=1.0, warmup_epochs=1,
                                    sparsity_warmup_epochs=2)
    processes = 2 if corpus == "asvspoof5" else 1
    params["runtime"].update(log_every=2, nproc_per_node=processes, checkpoint_every=2)
    params["finetune"]["cm"]["head"]["class_weights"] = {"bonafide": 0.7, "spoof": 0.3}
    params["sparsity_tolerance"] = None  # 3 epochs bring the gates near the target, not within 0.01 of it
    repo = make_repo(tmp_path, params)
    run(["dvc", "repro", "score@cm"], repo)

    fine = json.loads((repo / "metrics" / "cm" / "finetune.json").read_text())
    assert fine["augmentation"] and fine["utterances"] == 12 and fine["classes"] == 2
    assert fine["processes"] == processes and fine["resumed_at_step"] is None and fine["steps"] == 9
    steps = (repo / "dvclive" / "cm" / "plots" / "metrics" / "task_loss.tsv").read_text().splitlines()[1:]
    assert len(steps) == len({line.split("\t")[0] for line in steps})  # one writer: no step logged twice
    assert not (repo / "checkpoints" / "finetune" / "cm" / "last.pt").exists()
    cm = json.loads((repo / "metrics" / "cm.json").read_text())
    scores = pd.read_parquet(repo / "scores" / "cm" / "scores.parquet")
    calibration = json.loads((repo / "scores" / "cm" / "calibration.json").read_text())
    assert calibration == cm["calibration"] and calibration["prior"] == pytest.approx(0.95 / 1.45)
    w, b = calibration["weights"][0], calibration["bias"]
    assert np.allclose(scores["score_llr"], w * scores["score_raw"] + b)
    for split, (_, attacks, codecs) in SPLITS.items():
        if split == "train":
            continue
        m = cm[split]
        assert (m["utterances"], m["bonafide"], m["spoof"]) == (12, 6, 6)
        assert 0 <= m["eer"] <= 1 and m["min_dcf"] <= m["act_dcf"] + 1e-12 and m["cllr"] > 0
        assert sorted(m["attacks"]) == list(attacks)
        assert sorted(m["codecs"]) == (sorted(codecs) if corpus == "asvspoof5" else ["-"])
        lines = (repo / "scores" / "cm" / f"{split}.txt").read_text().splitlines()
        assert lines[0] == "filename\tcm-score" and len(lines) == 13
        rows = scores[scores["split"] == split]
        exported = [line.split("\t") for line in lines[1:]]
        assert [u for u, _ in exported] == list(rows["utt"])
        assert np.allclose([float(s) for _, s in exported], rows["score_llr"], atol=1e-6)
        y = (rows["label"] == "bonafide").to_numpy()
        assert m["act_dcf"] == pytest.approx(metrics.act_dcf(rows["score_llr"], y, 0.95, 1, 10))
        assert m["cllr"] == pytest.approx(metrics.cllr(rows["score_llr"], y))
    det = pd.read_csv(repo / "plots" / "cm" / "det.csv")
    assert det["p_fa"].iloc[0] == 1.0 and det["p_miss"].iloc[-1] == 1.0
