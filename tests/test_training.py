"""Training schedule pieces: margin ramp, parameter averaging, lr scaling, the frozen-front-end phase."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import hp
from hp.errors import CheckpointError
from hp.tasks import HeadConfig, TaskModel
from hp.train import ParameterAverage, TrainConfig, margin_factor, train

HEAD = HeadConfig(heads=2, compression=8, embedding=8)


def test_margin_factor_ramps_linearly_between_the_epochs():
    assert [margin_factor(e, 1, 3) for e in (0, 1, 1.5, 2, 3, 7)] == [0, 0, 0.25, 0.5, 1, 1]
    assert margin_factor(0, 0, 0) == 1 and margin_factor(5, 2, 2) == 1  # no ramp: the full margin throughout


def test_parameter_average_means_weights_but_keeps_the_last_gates():
    torch.manual_seed(0)
    model = hp.WavLM(hp.SHAPES["tiny"])
    average = ParameterAverage(model, 2)
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
    assert TrainConfig(batch_size=128, lr_reference_batch=64).lr_scale == 2.0
    assert TrainConfig(batch_size=128).lr_scale == 1.0
    for bad in (dict(optimizer="adam"), dict(aug_prob=1.5), dict(average_last=0), dict(epochs=2, average_last=3),
                dict(margin_start_epoch=3, margin_full_epoch=1), dict(lr_reference_batch=0)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for s in range(3):
        for u in range(4):
            path = tmp_path / f"id{s}" / f"{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
            rows.append({"utt": f"id{s}/{u}.wav", "path": str(path), "speaker": f"id{s}", "label": f"id{s}",
                         "duration_s": 0.5})
    return pd.DataFrame(rows)


def test_frozen_frontend_phase_trains_only_the_head_and_hands_it_over(corpus, tmp_path):
    torch.manual_seed(0)
    labels = sorted(corpus["label"].unique())
    model = TaskModel("sv", hp.WavLM(hp.SHAPES["tiny"], prune_units=()), labels, HEAD).freeze_frontend()
    frontend_before = {k: v.clone() for k, v in model.frontend.state_dict().items()}
    head_before = {k: v.clone() for k, v in model.head_state().items()}
    cfg = TrainConfig(epochs=2, batch_size=4, crop_seconds=0.5, optimizer="sgd", lr=0.1, final_lr=0.01,
                      margin_start_epoch=0, margin_full_epoch=1, device="cpu")
    run = train(model, corpus, cfg)
    assert run["steps"] == 6 and run["gates_frozen_at_step"] is None
    assert all(torch.equal(v, frontend_before[k]) for k, v in model.frontend.state_dict().items())
    assert any(not torch.equal(v, head_before[k]) for k, v in model.head_state().items())
    assert model.loss.margin == HEAD.margin and model.loss.topk_penalty == HEAD.topk_penalty  # restored
    model.save_head(tmp_path / "warm", {"epochs": 2})

    gated = TaskModel("sv", hp.WavLM(hp.SHAPES["tiny"]), labels, HEAD)
    gated.load_head(tmp_path / "warm")
    for k, v in model.head_state().items():
        assert torch.equal(gated.state_dict()[k], v)
    other = TaskModel("sv", hp.WavLM(hp.SHAPES["tiny"]), labels, HeadConfig(heads=2, compression=8, embedding=16))
    with pytest.raises(CheckpointError, match="head.json: head differs from this model's"):
        other.load_head(tmp_path / "warm")
