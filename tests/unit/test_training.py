"""Training schedule pieces: margin ramp, parameter averaging, lr scaling, the frozen-front-end phase."""
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import hp
from hp.errors import CheckpointError
from hp.tasks import TaskModel
from hp.training.loop import train
from hp.training.schedules import MarginSchedule
from hp.training.state import ParameterAverage
from configs import head_config, train_config

HEAD = head_config(heads=2, compression=8, embedding=8)


def test_margin_ramps_between_the_epochs_linearly_or_as_wespeaker():
    linear = MarginSchedule(1, 3)
    assert [linear(e) for e in (0, 1, 1.5, 2, 3, 7)] == [0, 0, 0.25, 0.5, 1, 1]
    assert MarginSchedule()(0) == 1 and MarginSchedule(2, 2)(5) == 1  # no ramp: the full margin throughout
    assert MarginSchedule(2, 2)(1.9) == 0  # WeSpeaker's: the initial margin until the fix epoch
    # MarginScheduler(increase_type="exp"): ratio = 1 - exp(p * ln(1e-3 / (1 + 1e-6))), p the share of the ramp
    exp = MarginSchedule(1, 4, "exp")
    for epoch in (1, 1.3, 2.5, 3.99):
        p = (epoch - 1) / 3
        assert exp(epoch) == pytest.approx(1 - math.exp(p * math.log(1e-3 / (1 + 1e-6))), abs=1e-12)
    assert exp(0.5) == 0 and exp(4) == 1 and exp(2) > linear(2)  # rises fast, then levels off
    with pytest.raises(ValueError, match="margin_schedule"):
        MarginSchedule(0, 1, "cosine")


def test_parameter_average_means_weights_but_keeps_the_last_gates():
    torch.manual_seed(0)
    model = hp.Frontend(hp.SHAPES["tiny"])
    average = ParameterAverage(2)
    snapshots = []
    for _ in range(2):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        average.add(model)
    average.apply(model)
    state = model.state_dict()
    gate = "encoder.layers.0.attention.head_gate.log_alpha"
    weight = "encoder.layers.0.attention.qkv.weight"
    torch.testing.assert_close(state[gate], snapshots[1][gate])  # the structure the last step reached
    torch.testing.assert_close(state[weight], (snapshots[0][weight] + snapshots[1][weight]) / 2)


def test_lr_scales_with_the_global_batch_and_configs_are_checked():
    assert train_config(batch_size=128, lr_reference_batch=64).lr_scale == 2.0
    assert train_config(batch_size=128).lr_scale == 1.0
    for bad in (dict(optimizer="adam"), dict(aug_prob=1.5), dict(average_last=0), dict(epochs=2, average_last=3),
                dict(margin_start_epoch=3, margin_full_epoch=1), dict(lr_reference_batch=0), dict(grad_clip=0),
                dict(grad_clip=True), dict(margin_schedule="step")):
        with pytest.raises(ValueError):
            train_config(**bad)


def test_frozen_frontend_phase_trains_only_the_head_and_hands_it_over(corpus, tmp_path):
    torch.manual_seed(0)
    labels = sorted(corpus["label"].unique())
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"], prune_units=()), labels, HEAD).freeze_frontend()
    frontend_before = {k: v.clone() for k, v in model.frontend.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head_state().items()}
    cfg = train_config(epochs=2, batch_size=4, crop_seconds=0.5, optimizer="sgd", lr=0.1, final_lr=0.01,
                      margin_start_epoch=0, margin_full_epoch=1, device="cpu")
    run = train(model, corpus, cfg)
    assert run["steps"] == 6 and run["gates_frozen_at_step"] is None
    assert all(torch.equal(v, frontend_before[k]) for k, v in model.frontend.state_dict().items())
    assert any(not torch.equal(v, head_before[k]) for k, v in model.head_state().items())
    assert model.loss.margin == HEAD.margin and model.loss.topk_penalty == HEAD.topk_penalty  # restored
    model.save_head(tmp_path / "warm", {"epochs": 2})

    gated = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), labels, HEAD)
    gated.load_head(tmp_path / "warm")
    for k, v in model.head_state().items():
        assert torch.equal(gated.state_dict()[k], v)
    other = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), labels, head_config(heads=2, compression=8, embedding=16))
    with pytest.raises(CheckpointError, match="head.json: head differs from this model's"):
        other.load_head(tmp_path / "warm")


def authors_lr(i: int, lr0: float, lr_t: float, total: int, warmup: int, scale: float, from_zero: bool) -> float:
    """WeSpeaker's ExponentialDecrease (wespeaker/utils/schedulers.py), written out: c(i) lr0 (lrT / lr0)^(i / T)
    with c = scale * i / W during the W warm-up steps from zero, (scale - 1) * i / W + 1 otherwise (scale > 1),
    then c = scale."""
    if i < warmup:
        c = scale * i / warmup if from_zero else ((scale - 1) * i / warmup + 1 if scale > 1 else scale)
    else:
        c = scale
    return c * lr0 * (lr_t / lr0) ** (i / total)


def test_the_decay_runs_from_step_zero_under_the_warm_up():
    """12 epochs with a 2-epoch warm-up: at its end the rate is lr0 * 0.01^(2/12), not lr0 (2.15x less than a
    warm-up to the peak followed by the decay)."""
    from hp.training.schedules import LRSchedule

    schedule = LRSchedule(1e-4, 1e-6, 1200, 200)
    assert schedule(200) == pytest.approx(1e-4 * 0.01 ** (1 / 6)) and 1e-4 / schedule(200) == pytest.approx(2.154, abs=1e-3)
    assert schedule(0) == 0 and schedule(100) == pytest.approx(0.5 * 1e-4 * 0.01 ** (1 / 12))
    assert LRSchedule(1e-4, 1e-6, 1200, 200, scale=4)(1199) == pytest.approx(4 * 1e-4 * 0.01 ** (1199 / 1200))
    assert LRSchedule(1e-4, 1e-6, 1200, 200, from_zero=False, scale=4)(0) == pytest.approx(1e-4)
    assert LRSchedule(1e-4, 1e-6, 1200, 200, from_zero=False, scale=0.5)(0) == pytest.approx(0.5e-4)


@pytest.mark.parametrize("from_zero,reference", [(True, 2), (False, 2), (False, 8)])
def test_logged_lr_is_the_authors_schedule_at_every_step(corpus, tmp_path, from_zero, reference):
    """A real short run's DVCLive `lr` curve against the closed form above at every logged step (3 steps per
    epoch, 4 epochs, a 2-epoch warm-up; scale = batch / reference: 2, or 0.5, where not from zero means none)."""
    from hp.training.live_log import LiveLogger

    labels = sorted(corpus["label"].unique())
    torch.manual_seed(0)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), labels, HEAD)
    cfg = train_config(target_sparsity=0.3, epochs=4, batch_size=4, crop_seconds=0.5, lr=1e-3, final_lr=1e-5,
                      lr_reference_batch=reference, warmup_epochs=2, warmup_from_zero=from_zero,
                      sparsity_warmup_epochs=2, log_every=1, device="cpu")
    logger = LiveLogger(tmp_path / "live", tmp_path / "staging")
    run = train(model, corpus, cfg, logger)
    logger.close()
    curve = pd.read_csv(tmp_path / "live" / "plots" / "metrics" / "lr.tsv", sep="\t")
    assert curve["step"].tolist() == list(range(12)) and run["steps"] == 12
    expected = [authors_lr(i, 1e-3, 1e-5, 12, 6, 4 / reference, from_zero) for i in range(12)]
    np.testing.assert_allclose(curve["lr"], expected, rtol=1e-12, atol=0)
    assert run["peak_lr"] == pytest.approx(max(expected))


@pytest.mark.parametrize("layerdrop", [None, 0.5])
def test_training_runs_every_layer_unless_layerdrop_is_asked_for(corpus, tiny_checkpoint, layerdrop):
    """A local transformers checkpoint whose config.json says layerdrop 0.1 (transformers' default): by default
    (model.layerdrop 0.0, the authors') every layer runs in every training step; model.layerdrop 0.5 skips some."""
    import json

    import yaml

    from helpers import ROOT_DIR
    from hp.stages.training import pretrained_frontend

    path, _ = tiny_checkpoint
    assert json.loads((path / "config.json").read_text())["layerdrop"] == 0.1
    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    params["model"]["pretrained"]["sv"] = str(path)
    if layerdrop is not None:
        params["model"]["layerdrop"] = layerdrop
    frontend = pretrained_frontend(params, "sv")
    assert frontend.config.layerdrop == (0.0 if layerdrop is None else layerdrop)
    torch.manual_seed(0)
    model = TaskModel("sv", frontend, sorted(corpus["label"].unique()), HEAD)
    calls = [0] * len(frontend.encoder.layers)
    for i, layer in enumerate(frontend.encoder.layers):
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    cfg = train_config(target_sparsity=0.3, epochs=4, batch_size=4, crop_seconds=0.5, sparsity_warmup_epochs=2,
                      device="cpu")
    run = train(model, corpus, cfg)
    if layerdrop is None:
        assert calls == [run["steps"]] * len(calls)
    else:
        assert calls[0] == run["steps"] and calls[1] < run["steps"]  # LayerDrop never skips layer 0


def test_layerdrop_param_is_checked():
    import yaml

    from helpers import ROOT_DIR
    from hp.errors import ConfigError
    from hp.params import ModelConfig, typed

    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    assert typed(ModelConfig, params["model"], "model").layerdrop == 0.0
    for bad in (1.5, "0.1", True):
        params["model"]["layerdrop"] = bad
        with pytest.raises(ConfigError, match="params.yaml: model.layerdrop must be"):
            typed(ModelConfig, params["model"], "model")


class _Lambdas:
    def __init__(self):
        self.lambda1 = []

    def log(self, step, values):
        self.lambda1.append(values["lambda1"])


@pytest.mark.parametrize("clamp", [True, False])
def test_lambda1_is_clamped_in_training_when_asked(corpus, clamp):
    """clamp_lambda1 (the authors'): lambda1 >= 0 after every step. Ascent drives it negative while the expected
    sparsity lags the warming-up target, so without the clamp it does go below 0 here."""
    torch.manual_seed(0)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), sorted(corpus["label"].unique()), HEAD)
    cfg = train_config(target_sparsity=0.6, epochs=4, batch_size=4, crop_seconds=0.5, sparsity_warmup_epochs=2,
                      reg_lr=0.05, clamp_lambda1=clamp, log_every=1, device="cpu")
    lambdas = _Lambdas()
    train(model, corpus, cfg, lambdas)
    assert (min(lambdas.lambda1) >= 0) == clamp


@pytest.mark.parametrize("grad_clip", [3.0, None])
def test_gradient_clipping_covers_the_whole_model_gates_included(corpus, monkeypatch, grad_clip):
    """One norm over every trained parameter of the model, log_alpha included (the authors' clip_grad_norm_ over
    model.parameters()); the lambdas are not the model's. grad_clip null: no clipping at all."""
    calls = []
    original = torch.nn.utils.clip_grad_norm_

    def recording(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        calls.append(({id(p) for p in parameters}, max_norm))
        return original(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording)
    torch.manual_seed(0)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), sorted(corpus["label"].unique()), HEAD)
    cfg = train_config(target_sparsity=0.3, epochs=1, batch_size=4, crop_seconds=0.5, grad_clip=grad_clip,
                      device="cpu")
    run = train(model, corpus, cfg)
    if grad_clip is None:
        assert calls == []
        return
    assert len(calls) == run["steps"] and all(norm == 3.0 for _, norm in calls)
    gates = {id(p) for g in model.frontend.gates().values() for p in g.parameters()}
    everything = {id(p) for p in model.parameters()}
    assert gates and calls[0][0] == everything and gates <= calls[0][0]


def test_recipes_set_the_authors_optimiser_details():
    """Weight decay 0 on every group (their param groups override the config's 1e-7), lambda1 clamped, clipping
    as their code of each task: none in the SV paper-era executor, 3.0 in the CM one; LayerDrop 0."""
    import yaml

    from helpers import ROOT_DIR
    from hp.training.sparsity import SparsityController, param_groups

    recipes = sorted((ROOT_DIR / "recipes").glob("*.yaml"))
    cm = [{stage: yaml.safe_load(r.read_text())[stage]["cm"] for stage in ("warmup", "finetune")} for r in recipes]
    assert len(recipes) == 2 and cm[0] == cm[1]  # one CM recipe (WavLM Base on ASVspoof5) in both presets
    for recipe in recipes:
        params = yaml.safe_load(recipe.read_text())
        assert params["model"]["layerdrop"] == 0.0, recipe.name
        for task, clip in (("sv", None), ("cm", 3.0)):
            group = params["finetune"][task]
            assert group["weight_decay"] == 0.0 and group["clamp_lambda1"] is True, (recipe.name, task)
            assert group["grad_clip"] == clip and group["warmup_from_zero"] is True, (recipe.name, task)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), ["a", "b"], HEAD)
    main, reg = param_groups(model, SparsityController(0.5, 10), lr=1e-4, reg_lr=0.05, weight_decay=0.0)
    assert all(g["weight_decay"] == 0.0 for g in main + reg)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_weight_decay_reaches_the_optimiser_as_the_params_say(corpus, monkeypatch, weight_decay):
    """finetune.<task>.weight_decay on the weights (0 on every group at the authors' 0); biases, norms, gates
    and lambdas never decay."""
    import hp.training.state as training

    made = []
    original = training.make_optimizer
    monkeypatch.setattr(training, "make_optimizer", lambda cfg, groups: made.append(groups) or original(cfg, groups))
    torch.manual_seed(0)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), sorted(corpus["label"].unique()), HEAD)
    train(model, corpus, train_config(target_sparsity=0.3, epochs=1, batch_size=4, crop_seconds=0.5,
                                     weight_decay=weight_decay, device="cpu"))
    (groups,) = made
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {g["weight_decay"] for g in groups} == ({0.0} if weight_decay == 0 else {0.0, weight_decay})
    weights = {id(p) for n, p in model.named_parameters() if p.dim() >= 2 and "log_alpha" not in n}
    assert decayed == (set() if weight_decay == 0 else weights)


def _dense_params(target: float) -> dict:
    """params.yaml with the SV fine-tuning cut to a few steps on the `corpus` fixture, at `target`."""
    import yaml

    from helpers import ROOT_DIR

    params = yaml.safe_load((ROOT_DIR / "params.yaml").read_text())
    params["target_sparsity"] = target
    params["model"]["pretrained"]["sv"] = "tiny"
    params["finetune"]["sv"].update(epochs=2, batch_size=4, crop_seconds=0.5, warmup_epochs=1,
                                    sparsity_warmup_epochs=1, aug_prob=0.0, resume="never")
    params["runtime"].update(log_every=1, device="cpu")
    return params


def test_target_zero_fine_tunes_the_dense_model_without_gates(corpus, tmp_path):
    """target_sparsity 0: the finetune stage builds the front end without gates and trains it plainly (no
    Lagrangian, no sparsity curves); the compact stage passes it through unchanged, so its weights are the
    trained model's, bit for bit, and the achieved sparsity is exactly 0."""
    import json

    from safetensors.torch import load_file

    from hp.reporting.figures import training_figure
    from hp.reporting.outputs import read_curves
    from hp.stages.compact import compact
    from hp.stages.finetune import finetune
    from hp.stages.training import pretrained_frontend

    params = _dense_params(0)  # as `dvc exp run -S target_sparsity=0` writes it: an int
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    corpus.to_parquet(manifests / "train.parquet")
    before = {k: v.clone() for k, v in pretrained_frontend(params, "sv", prune=False).state_dict().items()}
    paths = {name: tmp_path / name for name in ("finetuned", "live", "finetune.json", "checkpoints")}
    result = finetune("sv", params, manifests, tmp_path / "no-warmup", paths["finetuned"], paths["live"],
                      paths["finetune.json"], paths["checkpoints"])
    assert result["gates"] is False and result["gates_frozen_at_step"] is None and result["steps"] == 6
    assert result["expected_sparsity"] == 0.0 and result["deterministic_sparsity"] == 0.0
    assert json.loads(paths["finetune.json"].read_text())["gates"] is False
    trained = load_file(paths["finetuned"] / "model.safetensors")
    assert not any("log_alpha" in k for k in trained)  # no gate parameters at all
    assert json.loads((paths["finetuned"] / "task.json").read_text())["prune_units"] == []
    assert any(not torch.equal(trained[f"frontend.{k}"], v) for k, v in before.items())  # the front end learned
    logged = {p.stem for p in (paths["live"] / "plots" / "metrics").glob("*.tsv")}
    assert {"task_loss", "lr"} <= logged and not logged & {"expected_sparsity", "deterministic_sparsity",
                                                           "target_sparsity", "lambda1", "lambda2"}
    curves = read_curves(paths["live"])  # the report reads and draws a dense run's curves
    assert len(curves) == 6 and "lambda1" not in curves
    training_figure({"sv": curves}, tmp_path / "training.png")
    assert (tmp_path / "training.png").stat().st_size > 0

    metrics = compact(params, paths["finetuned"], tmp_path / "compact", tmp_path / "compact.json")
    assert metrics["achieved_sparsity"] == 0.0 and metrics["params_compact"] == metrics["params_dense"]
    small = load_file(tmp_path / "compact" / "model.safetensors")
    assert small.keys() == trained.keys() and all(torch.equal(small[k], v) for k, v in trained.items())
    assert TaskModel.load(tmp_path / "compact").frontend.num_params() == metrics["params_dense"]


@pytest.mark.parametrize("target", [-0.1, 1.0])
def test_targets_outside_zero_to_one_still_fail(corpus, tmp_path, target):
    from hp.stages.finetune import finetune

    (tmp_path / "manifests").mkdir()
    corpus.to_parquet(tmp_path / "manifests" / "train.parquet")
    with pytest.raises(ValueError, match=r"params.yaml: target_sparsity must be a number in \[0, 1\), got "):
        finetune("sv", _dense_params(target), tmp_path / "manifests", tmp_path / "no-warmup",
                 *(tmp_path / name for name in ("out", "live", "finetune.json", "checkpoints")))
    assert not (tmp_path / "out").exists() and not (tmp_path / "finetune.json").exists()


def test_compact_fails_when_the_sparsity_misses_its_target_beyond_the_tolerance(tmp_path):
    """A model whose gates never reached the target (here: untrained ones) fails the compact stage with target,
    achieved and tolerance named, writing nothing; sparsity_tolerance null keeps it and records the miss."""
    import json

    from hp.errors import SparsityError
    from hp.stages.compact import compact

    torch.manual_seed(0)
    TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), ["a", "b"], HEAD).save(tmp_path / "finetuned")
    params = _dense_params(0.7)
    with pytest.raises(SparsityError, match=r"params.yaml: sparsity_tolerance: .*finetuned compacts to params "
                                            r"sparsity 0\.\d{4}, target_sparsity 0\.7 missed by -0\.\d{4}, more than 0\.01 "):
        compact(params, tmp_path / "finetuned", tmp_path / "compact", tmp_path / "compact.json")
    assert not (tmp_path / "compact").exists() and not (tmp_path / "compact.json").exists()
    params["sparsity_tolerance"] = None
    metrics = compact(params, tmp_path / "finetuned", tmp_path / "compact", tmp_path / "compact.json")
    assert metrics["sparsity_tolerance"] is None and abs(metrics["achieved_sparsity"] - 0.7) > 0.01
    assert json.loads((tmp_path / "compact.json").read_text())["sparsity_tolerance"] is None
    params["sparsity_tolerance"] = 0.9  # wide enough for the untrained gates
    assert compact(params, tmp_path / "finetuned", tmp_path / "c2", tmp_path / "c2.json")["sparsity_tolerance"] == 0.9
    # both measures recorded, whichever is held; with target_measure macs the tolerance holds the MAC sparsity
    small = TaskModel.load(tmp_path / "c2").frontend
    assert metrics["params_compact"] == small.num_params() and metrics["macs_compact"] == small.num_macs(4.0)
    assert metrics["params_sparsity"] == metrics["achieved_sparsity"] != metrics["macs_sparsity"]
    params.update(target_measure="macs", sparsity_tolerance=0.01)
    with pytest.raises(SparsityError, match=r"compacts to macs sparsity 0\.\d{4}, target_sparsity 0\.7"):
        compact(params, tmp_path / "finetuned", tmp_path / "c3", tmp_path / "c3.json")
    params["sparsity_tolerance"] = None
    macs = compact(params, tmp_path / "finetuned", tmp_path / "c3", tmp_path / "c3.json")
    assert macs["target_measure"] == "macs" and macs["achieved_sparsity"] == macs["macs_sparsity"]
    assert macs["macs_sparsity"] == metrics["macs_sparsity"] and macs["macs_reference_seconds"] == 4.0


def test_a_target_above_zero_needs_gates(corpus):
    torch.manual_seed(0)
    model = TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"], prune_units=()), sorted(corpus["label"].unique()), HEAD)
    with pytest.raises(ValueError, match="target_sparsity 0.3 needs gates"):
        train(model, corpus, train_config(target_sparsity=0.3, epochs=1, batch_size=4, crop_seconds=0.5,
                                         device="cpu"))


def test_the_margin_ramp_scales_margin_and_penalty_together_and_restores_them():
    from hp.heads.losses import AAMSoftmax
    from hp.training.state import MarginRamp

    loss = AAMSoftmax(4, 3, margin=0.2, topk=1, topk_penalty=0.1)
    ramp = MarginRamp(loss, MarginSchedule(1, 3))
    ramp.set(2.0)
    assert ramp.applies and (loss.margin, loss.topk_penalty) == (0.2 * 0.5, 0.1 * 0.5)
    ramp.set(0.5)
    assert (loss.margin, loss.topk_penalty) == (0.0, 0.0)
    ramp.restore()  # the full margin, as the trained model is scored
    assert (loss.margin, loss.topk_penalty) == (0.2, 0.1)
    plain = torch.nn.CrossEntropyLoss()  # a head without a margin (CM): nothing to ramp
    none = MarginRamp(plain, MarginSchedule(1, 3))
    none.set(2.0)
    none.restore()
    assert not none.applies and not hasattr(plain, "margin")


def test_global_batches_resumed_mid_epoch_continue_the_same_micro_batches(corpus):
    """12 utterances, global batch 4 as 2 accumulated micro-batches of 2: 3 steps per epoch. Read from step 4
    (mid-epoch 1), a fresh reader yields exactly the micro-batches the uninterrupted one does from there."""
    from hp.training.feeding import GlobalBatches

    labels = sorted(corpus["label"].unique())
    cfg = train_config(epochs=3, batch_size=4, grad_accumulation=2, crop_seconds=0.25, device="cpu")

    def read(start):
        feed = GlobalBatches(corpus, labels, cfg, None, cfg.micro_batch(1), 0, 1)
        assert feed.steps_per_epoch == 3
        return [[(wave.clone(), target.clone()) for wave, target in step] for step in feed.from_step(start)]

    everything, resumed = read(0), read(4)
    assert len(everything) == 9 and len(resumed) == 5 and all(len(step) == 2 for step in everything)
    for a, b in zip(everything[4:], resumed):
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not torch.equal(everything[0][0][0], everything[3][0][0])  # each epoch its own order and crops


class _Killed(Exception):
    pass


class _KillAt:
    """A logger that stops the run with an exception as step `n` is logged (before that step's checkpoint)."""

    def __init__(self, n=None):
        self.n = n

    def log(self, step, values):
        if step == self.n:
            raise _Killed(step)


CHECKPOINT_KEYS = {"model", "optimizer", "reg_optimizer", "controller", "average", "step", "frozen_at",
                   "compacted_at", "structure", "rng", "sampling", "run"}


@pytest.mark.parametrize("every,die_at,resumed_at,tolerance", [
    (2, 2, 2, 1.0),  # mid-epoch, before the freeze (the resumed run freezes at step 3 itself)
    (None, 5, 3, None),  # from the epoch-end checkpoint, the gates learning to the end
    (1, 7, 7, 1.0),  # after the freeze (a frozen gate has no gradient left to count in the clipping norm)
])
def test_a_run_resumed_from_a_mid_run_checkpoint_ends_with_the_uninterrupted_weights(
        corpus, tmp_path, every, die_at, resumed_at, tolerance):
    """In one process, with dropout and LayerDrop on, the SV margin ramping, 2 accumulated micro-batches, the
    last 2 epochs averaged and (tolerance 1.0) the gates frozen at step 3, the end of the target's warm-up:
    killed mid-run and rerun from its checkpoint, the run ends bit for bit with the weights and the result of
    the uninterrupted one."""
    from hp.training.checkpoint import Checkpoints

    labels = sorted(corpus["label"].unique())
    cfg = train_config(target_sparsity=0.3, epochs=4, batch_size=4, crop_seconds=0.5, lr=2e-3, final_lr=1e-4,
                      sparsity_warmup_epochs=1, margin_start_epoch=0.5, margin_full_epoch=2, grad_accumulation=2,
                      average_last=2, freeze_tolerance=tolerance, log_every=1, device="cpu",
                      checkpoint_every=every)

    def fresh():
        torch.manual_seed(0)
        return TaskModel("sv", hp.Frontend(hp.SHAPES["tiny"]), labels, HEAD)

    reference = fresh()
    uninterrupted = train(reference, corpus, cfg, _KillAt(), None, Checkpoints(tmp_path / "a", "run", every))
    assert uninterrupted["gates_frozen_at_step"] == (None if tolerance is None else 3)
    assert uninterrupted["resumed_at_step"] is None
    with pytest.raises(_Killed):
        train(fresh(), corpus, cfg, _KillAt(die_at), None, Checkpoints(tmp_path / "b", "run", every))
    saved = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert saved.keys() == CHECKPOINT_KEYS and saved["step"] == resumed_at
    assert saved["frozen_at"] == (uninterrupted["gates_frozen_at_step"] if resumed_at > 3 else None)
    model = fresh()
    resumed = train(model, corpus, cfg, _KillAt(), None, Checkpoints(tmp_path / "b", "run", every))
    assert resumed == {**uninterrupted, "resumed_at_step": resumed_at}
    state = model.state_dict()
    assert state.keys() == reference.state_dict().keys()
    for name, value in reference.state_dict().items():
        assert torch.equal(value, state[name]), name


# Train-time compaction drops exact zeros from sums and runs smaller matmuls: float32 reorderings of ~1e-7. SGD's
# momentum is linear in them and ends 3e-8 apart (tolerance 1e-6). AdamW normalises every update, so a gradient
# component near zero moves its weight by up to lr (2e-3) whatever its size: the runs end 5e-4 apart at most (the
# head; the front end 2e-5), and 1e-3 still fails moments lost at the switch (zeroed: 5e-3 apart, SGD 7e-3).
COMPACTION_ATOL = {"adamw": 1e-3, "sgd": 1e-6}


def _compaction_run(corpus, tmp_path, name, compact_on_freeze, die_at=None, optimizer="adamw"):
    """SV at 0.3 for 4 epochs, 2 accumulated micro-batches, the last 2 epochs averaged, the gates frozen at step 3
    (tolerance 1.0), LayerDrop on; dropout off, since its masks are drawn at the pruned width and in blocks that
    compaction removes (the compacted run draws other masks, of the same distribution)."""
    from hp.training.checkpoint import Checkpoints

    labels = sorted(corpus["label"].unique())
    extra = {"momentum": 0.9, "lr": 0.05} if optimizer == "sgd" else {"lr": 2e-3}
    cfg = train_config(target_sparsity=0.3, epochs=4, batch_size=4, crop_seconds=0.5, final_lr=1e-4,
                      sparsity_warmup_epochs=1, grad_accumulation=2, average_last=2, freeze_tolerance=1.0,
                      compact_on_freeze=compact_on_freeze, log_every=1, device="cpu", checkpoint_every=1,
                      optimizer=optimizer, **extra)
    torch.manual_seed(0)
    config = hp.SHAPES["tiny"].replace(attention_dropout=0.0, activation_dropout=0.0, hidden_dropout=0.0)
    model = TaskModel("sv", hp.Frontend(config), labels, HEAD)
    run = train(model, corpus, cfg, _KillAt(die_at), None, Checkpoints(tmp_path / name, "run", 1))
    return model, run


def _assert_same_compact_model(a: TaskModel, b: TaskModel, atol: float) -> None:
    small_a, small_b = a.compacted(), b.compacted()
    assert small_a.frontend.structure == small_b.frontend.structure
    state_b = small_b.state_dict()
    assert state_b.keys() == small_a.state_dict().keys()
    for key, value in small_a.state_dict().items():
        assert torch.allclose(value, state_b[key], atol=atol, rtol=0), key


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_train_time_compaction_ends_with_the_model_of_the_uncompacted_run(corpus, tmp_path, optimizer):
    dense, run = _compaction_run(corpus, tmp_path, "a", False, optimizer=optimizer)
    small, compacted = _compaction_run(corpus, tmp_path, "b", True, optimizer=optimizer)
    assert run["gates_frozen_at_step"] == compacted["gates_frozen_at_step"] == compacted["compacted_at_step"] == 3
    assert run["compacted_at_step"] is None
    assert small.frontend.num_params() == dense.frontend.deterministic_num_params() < dense.frontend.num_params()
    assert small.frontend.gates() and all(g.frozen and (g.frozen_mask != 0).all() for g in small.frontend.gates().values())
    assert run["final_task_loss"] == pytest.approx(compacted["final_task_loss"], abs=1e-3)
    _assert_same_compact_model(dense, small, COMPACTION_ATOL[optimizer])


def test_a_run_resumes_either_side_of_the_train_time_compaction(corpus, tmp_path):
    """Killed before the switch (step 2) and after it (step 6), then resumed from the checkpoint: the run compacts
    itself at step 3 or rebuilds the compacted model from the checkpoint, and ends bit for bit as the run that went
    through."""
    reference, run = _compaction_run(corpus, tmp_path, "ref", True)
    for die_at in (2, 6):
        with pytest.raises(_Killed):
            _compaction_run(corpus, tmp_path, f"k{die_at}", True, die_at=die_at)
        saved = torch.load(tmp_path / f"k{die_at}" / "last.pt", weights_only=True)
        assert saved["compacted_at"] == (3 if die_at > 3 else None) and (saved["structure"] is None) == (die_at < 3)
        model, resumed = _compaction_run(corpus, tmp_path, f"k{die_at}", True)
        assert resumed == {**run, "resumed_at_step": die_at}
        state = model.state_dict()
        assert state.keys() == reference.state_dict().keys()
        for name, value in reference.state_dict().items():
            assert torch.equal(value, state[name]), (die_at, name)


def test_compact_on_freeze_needs_a_freeze():
    with pytest.raises(ValueError, match="compact_on_freeze needs freeze_tolerance"):
        train_config(target_sparsity=0.3, compact_on_freeze=True, freeze_tolerance=None)
