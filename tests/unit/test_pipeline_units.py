"""Pipeline pieces without DVC: params typing, manifests and their validation, task model save/load, heads."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import yaml

import hp
from hp.data import asvspoof, manifest, voxceleb
from hp.data.manifest import DataError, Validation, read_trials
from hp.errors import ConfigError
from hp.heads.losses import AAMSoftmax
from hp.heads.pooling import MHFA, GradMultiply
from hp.params import ExportConfig, ManifestsConfig, ScoreConfig, load_params, runtime, section, typed
from hp.stages.training import training_configs
from hp.tasks import get_task
from hp.tasks import TaskModel

from helpers import ROOT_DIR
from configs import head_config, train_config


def test_params_and_recipes_build_typed_configs():
    for path in [ROOT_DIR / "params.yaml", *sorted((ROOT_DIR / "recipes").glob("*.yaml"))]:
        params = load_params(path)  # the top level: known keys, target_sparsity and sparsity_tolerance
        runtime(params)
        typed(ManifestsConfig, section(params, "manifests"), "manifests")
        typed(ExportConfig, section(params, "export"), "export")
        typed(ScoreConfig, {k: v for k, v in section(params, "score").items() if k not in ("sv", "cm")}, "score")
        for task in ("sv", "cm"):
            get_task(task).score_settings(params)
        for task in ("sv", "cm"):
            training_configs(task, params, "finetune", params["target_sparsity"])
            if params["warmup"][task]["epochs"] > 0:
                training_configs(task, params, "warmup")
        sv = {k: v for k, v in params["prepare"]["sv"].items() if k not in ("corpus", "mini")}
        typed(voxceleb.SVSource, sv, "prepare.sv").check("prepare.sv")
        cm = params["prepare"]["cm"]
        if cm["corpus"] != "mini":
            typed(asvspoof.CMSource, {"corpus": cm["corpus"], "corpus_dir": cm[asvspoof.CORPUS_DIRS[cm["corpus"]]],
                                      "musan_dir": cm["musan_dir"], "rirs_dir": cm["rirs_dir"]}, "prepare.cm")
        assert set(params["model"]["pretrained"]) == {"sv", "cm"}, path
        get_task("cm").score_settings(params)  # raises on a bad calibration prior


def _params(change) -> dict:
    """params.yaml after `change(params)`."""
    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    change(params)
    return params


def _changed(change, target=0.5, task="sv", stage="finetune"):
    return training_configs(task, _params(change), stage, target)


@pytest.mark.parametrize("change, message", [
    (lambda p: p["finetune"]["sv"].update(epoch=3), "unknown key finetune.sv.epoch$"),
    (lambda p: p["finetune"]["sv"].update(epochs="3"), "finetune.sv.epochs must be an integer, got '3'"),
    (lambda p: p["finetune"]["sv"].update(clamp_lambda1="false"),
     "finetune.sv.clamp_lambda1 must be true or false, got 'false'"),
    (lambda p: p["finetune"]["sv"].update(freeze_tolerance=-0.1), "freeze_tolerance must be >= 0"),
    # params.yaml is the one source of defaults: a key a run reads may not be left out
    (lambda p: p["finetune"]["sv"].pop("lr"), "params.yaml: missing key finetune.sv.lr$"),
    (lambda p: p["finetune"]["sv"].pop("reg_lr"), "params.yaml: missing key finetune.sv.reg_lr$"),
    (lambda p: p["finetune"]["sv"].pop("margin_full_epoch"), "params.yaml: missing key finetune.sv.margin_full_epoch$"),
    (lambda p: p["finetune"]["sv"]["head"].pop("margin"), "params.yaml: missing key finetune.sv.head.margin$"),
    (lambda p: p["finetune"]["sv"]["head"].pop("heads"), "params.yaml: missing key finetune.sv.head.heads$"),
    (lambda p: p["finetune"]["sv"].update(optimizer="sgd"), "params.yaml: missing key finetune.sv.momentum$"),
    (lambda p: p["runtime"].pop("log_every"), "params.yaml: missing key runtime.log_every$"),
    (lambda p: p["runtime"].update(nproc_per_node=0), "runtime.nproc_per_node must be a positive integer, got 0"),
    (lambda p: p["runtime"].update(threads=0), "runtime.threads must be a positive integer or null, got 0"),
    (lambda p: p["model"].update(layerdrop=2), r"model.layerdrop must be a probability in \[0, 1\], got 2"),
])
def test_training_keys_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        _changed(change)


def test_keys_a_run_does_not_read_may_be_left_out():
    """A dense run reads no pruning key, CM no margin, AdamW no momentum, MHFA no ECAPA width: none required."""
    def strip(params):
        for key in ("reg_lr", "lambda_lr", "constrain", "freeze_tolerance", "compact_on_freeze", "ecapa_channels"):
            params["finetune"]["sv"].pop(key, None)
        params["finetune"]["sv"]["head"].pop("ecapa_channels")
    cfg, head = _changed(strip, target=0.0)
    assert cfg.target_sparsity == 0.0 and head.backend == "mhfa"
    cfg, _ = _changed(lambda p: None, task="cm")
    assert cfg.margin_start_epoch == cfg.margin_full_epoch == 0.0  # CM's loss has no margin
    with pytest.raises(ConfigError, match="missing key finetune.sv.head.ecapa_channels$"):
        _changed(lambda p: (p["finetune"]["sv"]["head"].update(backend="ecapa"),
                            p["finetune"]["sv"]["head"].pop("ecapa_channels")))


def _wav(path, seconds=1.0, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, int(seconds * sr)).astype(np.float32), sr)


def test_voxceleb_tree_and_trial_syntax(tmp_path):
    wav = tmp_path / "wav"
    for spk in ("id00001", "id00002"):
        for utt in ("00001", "00002"):
            _wav(wav / spk / "vid" / f"{utt}.wav")
    table = voxceleb.voxceleb_tree(wav, "test", Validation(min_seconds=0.5))
    assert list(table["utt"])[0] == "id00001/vid/00001.wav" and set(table["speaker"]) == {"id00001", "id00002"}
    assert (table["duration_s"] == 1.0).all() and (table["sample_rate"] == 16000).all()
    trials = tmp_path / "trials.txt"  # lists naming missing files: tests/unit/test_voxceleb.py
    trials.write_text("1 a b\nyes a b\n")
    with pytest.raises(DataError, match=r"trials.txt:2: expected"):
        read_trials(trials)
    trials.write_text("1 a b\n\n0 a c\n\n  \n")  # blank lines (a trailing one too many) are no trials
    assert read_trials(trials)[["label", "enroll", "test"]].values.tolist() == [[1, "a", "b"], [0, "a", "c"]]
    trials.write_text("1 a b\n\n0 a\n")  # and a bad line keeps its own number
    with pytest.raises(DataError, match=r"trials.txt:3: expected"):
        read_trials(trials)
    trials.write_text("\n\n")
    with pytest.raises(DataError, match=r"trials.txt: no trials"):
        read_trials(trials)


def test_validation_names_bad_files_or_drops_them(tmp_path):
    wav = tmp_path / "wav"
    _wav(wav / "id1" / "v" / "00001.wav")
    _wav(wav / "id1" / "v" / "00002.wav", seconds=0.2)
    _wav(wav / "id1" / "v" / "00003.wav", sr=8000)
    (wav / "id1" / "v" / "00004.wav").write_bytes(b"junk")
    with pytest.raises(DataError, match="3 bad audio file") as e:
        voxceleb.voxceleb_tree(wav, "train", Validation(min_seconds=0.5))
    assert "00002.wav: 0.20 s" in str(e.value) and "00003.wav: sample rate 8000" in str(e.value)
    assert "00004.wav: unreadable" in str(e.value)
    v = Validation(min_seconds=0.5, drop_invalid=True)
    table = voxceleb.voxceleb_tree(wav, "train", v)
    assert list(table["utt"]) == ["id1/v/00001.wav"] and len(v.dropped) == 3


@pytest.mark.parametrize("decode", [True, False])
def test_probing_in_processes_gives_what_one_process_gives(tmp_path, decode):
    """Enough files for hp.data.manifest.probe_files to use processes, some of them bad in each way: the same
    frames, rates, channels and errors, in the same order, as probing them all here."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(manifest.SERIAL_FILES + 300):
        path = tmp_path / f"{i:05d}.wav"
        sr, channels = (8000, 1) if i % 701 == 5 else (16000, 2 if i % 997 == 7 else 1)
        sf.write(path, rng.normal(0, 0.1, (int(rng.integers(400, 3000)), channels)).astype(np.float32), sr)
        if i % 499 == 3:
            path.write_bytes(b"junk")
        paths.append(str(path))
    paths.insert(1000, str(tmp_path / "missing.wav"))
    many = manifest.probe_files(paths, decode)
    assert many[0].shape == (len(paths),) and sum(e is not None for e in many[3]) >= 6
    one = manifest.probe_files(paths, decode, processes=1)
    for got, expected in zip(many, one):
        assert np.array_equal(got, expected) if isinstance(got, np.ndarray) else got == expected
    table = Validation(min_seconds=0.01, drop_invalid=True, decode=decode).check(pd.DataFrame({"path": paths}),
                                                                                "list")
    ok = np.array([e is None for e in one[3]]) & (one[1] == 16000) & (one[2] == 1)
    assert list(table["path"]) == [p for p, keep in zip(paths, ok) if keep] and not ok.all()


@pytest.mark.parametrize("task", ["sv", "cm"])
def test_task_model_save_load_and_compaction(tmp_path, task):
    torch.manual_seed(0)
    labels = ["a", "b", "c"] if task == "sv" else ["spoof", "bonafide"]
    head = head_config(heads=4, compression=16, embedding=8, subcenters=2, topk=1)  # sub-centre weights round-trip
    model = TaskModel(task, hp.Frontend(hp.SHAPES["tiny"]), labels, head)
    model.save(tmp_path / "m")
    loaded = TaskModel.load(tmp_path / "m").eval()
    wave, lengths = torch.randn(2, 8000), torch.tensor([8000, 5000])
    with torch.no_grad():
        assert torch.equal(loaded.embed(wave, lengths), model.eval().embed(wave, lengths))
        small = model.compacted()
        assert (small.embed(wave, lengths) - model.embed(wave, lengths)).abs().max() < 1e-4
    small.save(tmp_path / "c")
    assert TaskModel.load(tmp_path / "c").frontend.structure == small.frontend.structure
    meta = json.loads((tmp_path / "c" / "task.json").read_text())
    assert meta["prune_units"] == [] and meta["labels"] == labels
    assert TaskModel.load(tmp_path / "c").head_config == head


def test_mhfa_ignores_padding():
    torch.manual_seed(0)
    pool = MHFA(num_states=3, dim=8, heads=2, compression=4, embedding=5)
    states = tuple(torch.randn(1, 10, 8) for _ in range(3))
    mask = torch.arange(10) < 6
    padded = tuple(torch.cat([s[:, :6], torch.randn(1, 4, 8) * 100], 1) for s in states)
    a = pool(tuple(s[:, :6] for s in states))
    b = pool(padded, mask[None])
    torch.testing.assert_close(a, b)


def test_aam_softmax_and_grad_multiply():
    torch.manual_seed(0)
    aam = AAMSoftmax(4, 3, margin=0.2, scale=10.0)
    emb = torch.randn(5, 4, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 0, 1])
    plain = torch.nn.functional.cross_entropy(
        10.0 * torch.nn.functional.linear(torch.nn.functional.normalize(emb), torch.nn.functional.normalize(aam.weight)),
        labels)
    assert aam(emb, labels) > plain  # the margin makes the true class harder
    x = torch.ones(3, requires_grad=True)
    GradMultiply.apply(x, 0.1).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), 0.1))


class _Curves:
    """Records the deterministic sparsity and every log_alpha after each step."""

    def __init__(self, model):
        self.model, self.rows = model, []

    def log(self, step, values):
        alphas = torch.cat([g.log_alpha.detach().clone() for g in self.model.frontend.gates().values()])
        self.rows.append((step, values["deterministic_sparsity"], alphas))


@pytest.mark.parametrize("tolerance", [None, 1.0])
def test_train_freezes_the_structure_once_close_to_the_target(tmp_path, tolerance):
    import pandas as pd

    from hp.training.loop import train

    rows = []
    for i in range(8):
        path = tmp_path / f"{i}.wav"
        _wav(path, seconds=0.5)
        rows.append({"path": str(path), "duration_s": 0.5, "label": "ab"[i % 2]})
    torch.manual_seed(0)
    head = head_config(heads=2, compression=8, embedding=8)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), ["a", "b"], head)
    cfg = train_config(target_sparsity=0.3, epochs=3, batch_size=4, crop_seconds=0.5, lr=1e-3, reg_lr=0.2,
                      sparsity_warmup_epochs=1, freeze_tolerance=tolerance, log_every=1)
    curves = _Curves(model)
    run = train(model, pd.DataFrame(rows), cfg, curves)
    assert run["steps"] == 6
    gates = model.frontend.gates().values()
    if tolerance is None:
        assert run["gates_frozen_at_step"] is None and all(g.log_alpha.requires_grad for g in gates)
    else:  # any sparsity is within 1.0: frozen on the first step after the 2-step warm-up
        assert run["gates_frozen_at_step"] == 2 and all(g.frozen for g in gates)
        after = [(s, alphas) for step, s, alphas in curves.rows if step >= 2]
        assert len({s for s, _ in after}) == 1 and all(torch.equal(a, after[0][1]) for _, a in after)
    assert not torch.equal(curves.rows[0][2], curves.rows[1][2])  # the gates did learn before


def test_aam_subcentres_and_inter_topk():
    import math

    torch.manual_seed(0)
    aam = AAMSoftmax(4, 3, margin=0.2, scale=10.0, subcenters=2, topk=1, topk_penalty=0.1)
    emb, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    cos = (torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(aam.weight).T).detach()  # [5, 6]
    per_class = torch.stack([cos[:, 2 * c:2 * c + 2].max(1).values for c in range(3)], 1)  # closest sub-centre
    torch.testing.assert_close(aam.cosine(emb).detach(), per_class)
    theta = torch.acos(per_class)
    expected = per_class.clone()
    for i, y in enumerate(labels.tolist()):
        expected[i, y] = math.cos(theta[i, y] + 0.2)
        hardest = max((c for c in range(3) if c != y), key=lambda c: per_class[i, c])
        expected[i, hardest] = math.cos(theta[i, hardest] - 0.1)  # the impostor's logit goes *up*
    torch.testing.assert_close(aam(emb, labels), torch.nn.functional.cross_entropy(10.0 * expected, labels),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="topk"):
        AAMSoftmax(4, 3, topk=3)


def test_aam_target_logit_past_pi_minus_m_is_continuous_and_falling():
    """WeSpeaker's ArcMarginProduct: cos(theta + m) up to theta = pi - m, then cos(theta) - (1 - cos m): the two
    meet at -1, so the target logit falls monotonically over all angles."""
    import math

    aam = AAMSoftmax(2, 2, margin=0.2, scale=1.0)
    with torch.no_grad():
        aam.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta = torch.linspace(0.05, math.pi - 0.01, 400, dtype=torch.float64)
    emb = torch.stack([torch.cos(theta), torch.sin(theta)], 1).float()  # at angle theta from class 0
    target = _aam_target_logit(aam, emb).double()
    past = theta > math.pi - 0.2
    assert past.any() and (~past).any()
    torch.testing.assert_close(target[past], torch.cos(theta[past]) - (1 - math.cos(0.2)), atol=1e-4, rtol=0)
    torch.testing.assert_close(target[~past], torch.cos(theta[~past] + 0.2), atol=1e-4, rtol=0)
    assert (target.diff() < 0).all()  # no jump up at the boundary: the old m sin(m) offset jumped by 0.02


def _aam_target_logit(aam: AAMSoftmax, emb: torch.Tensor) -> torch.Tensor:
    """The margin-modified logit of class 0 that AAMSoftmax's cross-entropy sees, solved from its loss:
    loss = -s t + log(e^{s t} + e^{s c}) with c class 1's plain cosine, so t = c - log(e^loss - 1) / s."""
    cosine = aam.cosine(emb).detach().double()
    loss = torch.stack([aam(e[None], torch.zeros(1, dtype=torch.long)) for e in emb]).detach().double()
    return cosine[:, 1] - torch.log(torch.expm1(loss)) / aam.scale


@pytest.mark.parametrize("key", ["asnorm_top_n", "qmf_trials"])
@pytest.mark.parametrize("bad", [0, 2.5, True, "300"])
def test_score_names_a_bad_count_before_any_work(tmp_path, key, bad):
    from hp.stages.score import score

    params = _params(lambda p: p["score"]["sv"].update({key: bad}))
    with pytest.raises(ConfigError, match=f"score.sv.{key} must be (a positive integer|an integer) or null"):
        score("sv", params, *(tmp_path / name for name in ("m", "d", "c.json", "o.json", "det.csv", "s")))


def test_score_names_a_non_boolean_mean_subtraction(tmp_path):
    from hp.stages.score import score

    params = _params(lambda p: p["score"]["sv"].update(mean_subtraction="no"))
    with pytest.raises(ConfigError, match="score.sv.mean_subtraction must be true or false, got 'no'"):
        score("sv", params, *(tmp_path / name for name in ("m", "d", "c.json", "o.json", "det.csv", "s")))


@pytest.mark.parametrize("bad", [0, 1.0, True, "0.5"])
def test_score_names_a_bad_calibration_prior(tmp_path, bad):
    from hp.stages.score import score

    params = _params(lambda p: p["score"]["cm"].update(calibration_prior=bad))
    with pytest.raises(ConfigError, match="score.cm.calibration_prior must be (in \\(0, 1\\)|a number) or null"):
        score("cm", params, *(tmp_path / name for name in ("m", "d", "c.json", "o.json", "det.csv", "s")))


EXPORT = {"seconds": 4.0, "repeats": 20, "threads": 1, "parity_seconds": [1.0, 2.5], "tolerance": 1e-4,
          "exporter": "torchscript", "int8": "dynamic", "calibration_utterances": 8}


@pytest.mark.parametrize("key, bad, message", [
    ("seconds", 0, "export.seconds must be a positive number, got 0"),
    ("tolerance", "1e-4", "export.tolerance must be a number, got '1e-4'"),
    ("parity_seconds", 2.0, "export.parity_seconds must be a list of lengths in seconds, got 2.0"),
    ("parity_seconds", [1.0, -1], "export.parity_seconds must be a positive number, got -1"),
    ("repeats", 2.5, "export.repeats must be an integer, got 2.5"),
    ("repeats", 0, "export.repeats must be a positive integer, got 0"),
    ("threads", 0, "export.threads must be a positive integer or null, got 0"),
    ("int8", "float16", "export.int8 must be one of"),
    ("calibration_utterances", 0, "export.calibration_utterances must be a positive integer, got 0")])
def test_export_names_a_bad_setting_before_any_work(tmp_path, key, bad, message):
    from hp.stages.export import export

    params = {**yaml.safe_load((ROOT_DIR / "params.yaml").read_text()), "export": {**EXPORT, key: bad}}
    with pytest.raises(ConfigError, match=f"params.yaml: {re.escape(message)}"):
        export("sv", params, *(tmp_path / name for name in ("compact", "scores", "manifests", "metrics", "out")))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, message", [
    (lambda p: p["score"].update(batch_secnds=60), "params.yaml: unknown key score.batch_secnds$"),
    (lambda p: p["score"].pop("batch_seconds"), "params.yaml: missing key score.batch_seconds$"),
    (lambda p: p["score"].update(batch_seconds="60"), "params.yaml: score.batch_seconds must be a number, got '60'"),
    (lambda p: p["runtime"].update(num_workers=-1), "params.yaml: runtime.num_workers must be an integer >= 0, got -1"),
])
def test_score_names_a_bad_shared_setting_before_any_work(tmp_path, change, message):
    from hp.stages.score import score

    with pytest.raises(ConfigError, match=message):
        score("cm", _params(change), *(tmp_path / name for name in ("m", "d", "c.json", "o.json", "det.csv", "s")))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change, message", [
    (lambda p: p["export"].update(repeat=3), "params.yaml: unknown key export.repeat$"),
    (lambda p: p["export"].pop("tolerance"), "params.yaml: missing key export.tolerance$"),
    (lambda p: p["export"].update(exporter="onnx"),
     "params.yaml: export.exporter must be one of torchscript, dynamo, got 'onnx'$"),
    (lambda p: p["manifests"].update(min_seconds=0), "params.yaml: manifests.min_seconds must be a positive number"),
])
def test_export_and_manifests_name_unknown_and_missing_keys(tmp_path, change, message):
    from hp.stages.export import export
    from hp.stages.manifests import manifests

    params = _params(change)
    with pytest.raises(ConfigError, match=message):
        if "manifests" in message:
            manifests("sv", params, tmp_path / "corpus", tmp_path / "out")
        else:
            export("sv", params, *(tmp_path / name for name in ("compact", "scores", "manifests", "metrics", "out")))
    assert list(tmp_path.iterdir()) == []


def test_each_task_has_its_own_front_end(tiny_checkpoint):
    """model.pretrained.<task>: here SV the built-in tiny model, CM a transformers checkpoint directory."""
    from hp.stages.training import pretrained_frontend

    path, hf = tiny_checkpoint
    params = {"model": {"pretrained": {"sv": "tiny", "cm": str(path)}, "prune_units": ["head"], "layerdrop": 0.0,
                        "seed": 0}}
    sv, cm = pretrained_frontend(params, "sv"), pretrained_frontend(params, "cm")
    assert sv.config.num_hidden_layers == hp.SHAPES["tiny"].num_hidden_layers
    assert cm.config.num_hidden_layers == hf.config.num_hidden_layers and cm.prune_units == {"head"}
    assert pretrained_frontend(params, "cm", prune=False).prune_units == set()
    with pytest.raises(ConfigError, match="missing key model.pretrained.cm"):
        pretrained_frontend({"model": {"pretrained": {"sv": "tiny"}, "prune_units": [], "layerdrop": 0.0, "seed": 0}},
                            "cm")


@pytest.mark.parametrize("margin, topk", [(0.0, 0), (0.2, 0), (0.2, 5)])
def test_chance_loss_is_the_loss_of_an_embedding_orthogonal_to_every_class(margin, topk):
    from hp.heads.losses import AAMSoftmax, SoftmaxClassifier

    loss = AAMSoftmax(8, 24, margin=margin, scale=32.0, topk=topk, subcenters=2)
    with torch.no_grad():  # class weights along e_1 .. e_7 (sub-centres alike), the embedding along e_8
        loss.weight.copy_(torch.eye(8)[torch.arange(48) % 7])
    embeddings = torch.zeros(3, 8)
    embeddings[:, 7] = 1.0
    # cosines are exactly 0 here, so the kernel's clamp (1e-7) moves the loss by ~1e-5 at most
    assert loss(embeddings, torch.tensor([0, 5, 23])).item() == pytest.approx(loss.chance_loss(), abs=1e-4)
    if margin == 0 and topk == 0:
        assert loss.chance_loss() == pytest.approx(math.log(24))
    classifier = SoftmaxClassifier(8, 2, weights=[0.9, 0.1])
    with torch.no_grad():
        classifier.linear.weight.zero_()
        classifier.linear.bias.zero_()
    assert classifier(torch.randn(4, 8), torch.tensor([0, 1, 1, 0])).item() == pytest.approx(classifier.chance_loss())
