"""ONNX export and the deployable bundle: parity with PyTorch on lengths and batch sizes the export never saw,
dynamic axes, nothing left behind by a failed export, dense vs compact cost."""
import json

import numpy as np
import onnx
import pytest
import torch

import hp.deploy.export as export
from hp.deploy.export import Bundle, OnnxModel, dense_counterpart, measure_costs, parity, random_batch
from hp.deploy.release import write_manifest
from hp.errors import CheckpointError, ExportError
from hp.model import Frontend
from hp.model.config import SHAPES
from hp.tasks import TaskModel
from helpers import SV_SCORING as SCORING, compact_sv_model, randomise_gates
from configs import head_config

@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "sv"
    written, checked = Bundle.write(compact_sv_model(), SCORING, out, parity_seconds=[0.6, 1.7])
    return written, checked


def test_bundle_files_and_recorded_parity(bundle):
    written, checked = bundle
    assert sorted(p.name for p in written.directory.iterdir()) == ["SHA256SUMS", "model.onnx", "model.safetensors",
                                                                   "scoring.json", "task.json"]
    assert json.loads((written.directory / "scoring.json").read_text()) == {"task": "sv", "sample_rate": 16000,
                                                                            **SCORING}
    assert set(checked) == {"embeddings"} and checked["embeddings"]["scaled"] <= 1e-4


def test_onnx_axes_are_dynamic(bundle):
    graph = onnx.load(bundle[0].directory / "model.onnx").graph
    wave, lengths = graph.input
    assert [d.dim_param != "" for d in wave.type.tensor_type.shape.dim] == [True, True]
    assert lengths.type.tensor_type.shape.dim[0].dim_param != ""
    assert [o.name for o in graph.output] == ["embeddings"]


@pytest.mark.parametrize("seconds", [[0.9], [2.3, 0.45, 1.1, 3.0]])
def test_onnx_matches_pytorch_on_unseen_shapes(bundle, seconds):
    """Batch sizes and lengths other than the export's example and the parity check's: padded batches included."""
    written, _ = bundle
    onnx_graph = OnnxModel(written.directory / "model.onnx")
    wave, lengths = random_batch(seconds, seed=7)
    ours, theirs = written.graph.run(wave, lengths), onnx_graph.run(wave, lengths)
    assert theirs["embeddings"].shape == (len(seconds), 12)
    np.testing.assert_allclose(theirs["embeddings"], ours["embeddings"], rtol=1e-4, atol=1e-4)
    worst = parity(written.graph, onnx_graph, seconds, seed=3)["embeddings"]
    assert worst["scaled"] <= 1e-4


def test_load_round_trip(bundle):
    written, _ = bundle
    loaded = Bundle.load(written.directory)
    wave, lengths = random_batch([1.2, 0.8])
    np.testing.assert_array_equal(loaded.graph.run(wave, lengths)["embeddings"],
                                  written.graph.run(wave, lengths)["embeddings"])
    assert loaded.scoring["threshold"] == SCORING["threshold"] and loaded.task == "sv"
    np.testing.assert_allclose(loaded.runner("onnx")(wave, lengths)["embeddings"],
                               loaded.runner("torch")(wave, lengths)["embeddings"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="runtime"):
        loaded.runner("tensorrt")


def test_load_errors_name_the_file(bundle, tmp_path):
    with pytest.raises(CheckpointError, match="no such model directory"):
        Bundle.load(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in bundle[0].directory.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "scoring.json").write_text(json.dumps({"task": "cm", **SCORING}))
    with pytest.raises(CheckpointError, match="scoring.json: checksum differs from SHA256SUMS's"):
        Bundle.load(broken)  # changed after export
    write_manifest(broken)  # changed, and listed again: now its content is what is wrong
    with pytest.raises(CheckpointError, match="scoring.json: task 'cm' differs"):
        Bundle.load(broken)


def test_failed_parity_leaves_nothing(tmp_path, monkeypatch):
    """An export that does not compute what PyTorch computes fails the stage, and no bundle appears."""
    monkeypatch.setattr(export, "export_onnx", lambda graph, path, opset, exporter: path.write_bytes(b"stub"))
    monkeypatch.setattr(export, "OnnxModel", lambda path, threads=None: None)
    monkeypatch.setattr(export, "parity", lambda *a, **k: {"embeddings": {"abs": 0.5, "scaled": 2e-3}})
    out = tmp_path / "bundle"
    with pytest.raises(ExportError, match=r"model.onnx: ONNX embeddings differ from PyTorch.s by 0.002"):
        Bundle.write(compact_sv_model(), SCORING, out, parity_seconds=[1.0])
    assert list(tmp_path.iterdir()) == []


def test_cm_graph_needs_its_calibration():
    model = compact_sv_model()
    with pytest.raises(ValueError, match="an? sv graph takes no calibration"):
        export.InferenceGraph(model, export.LinearCalibration((1.0,), 0.0, 0.5))


def test_dense_vs_compact_costs(bundle):
    written, _ = bundle
    costs = measure_costs(written, seconds=1.0, repeats=2, threads=1)
    dense, compact = costs["dense"], costs["compact"]
    model = written.graph.model
    assert compact["params"] == model.frontend.num_params()
    assert dense["params"] == dense_counterpart(model).frontend.num_params() == model.frontend.dense_num_params
    backend = sum(p.numel() for p in model.backend.parameters())  # SV: the AAM head is training-only
    assert dense["params_inference"] - dense["params"] == compact["params_inference"] - compact["params"] == backend
    assert 0 < compact["macs"] < dense["macs"]
    assert set(compact["latency_ms"]) == {"torch_cpu", "onnxruntime_cpu"} and set(dense["latency_ms"]) == {"torch_cpu"}
    assert all(v > 0 for v in [*compact["latency_ms"].values(), *dense["latency_ms"].values()])
    assert costs["input"] == {"batch": 1, "seconds": 1.0} and costs["hardware"]["cores"] >= 1


# either exporter: the TorchScript trace (the default) and torch.export's, which costs ~40x as much (slow)
@pytest.mark.parametrize("mean_norm, exporter", [("frames", "torchscript"), ("channels", "torchscript"),
                                                 pytest.param("frames", "dynamo", marks=pytest.mark.slow)])
def test_cm_graph_with_the_authors_head_and_mean_norm_matches_pytorch(tmp_path, mean_norm, exporter):
    """The CM head's batch norm (trained running statistics) and either mean normalisation of the hidden states
    (the frames one masked by the lengths) export with parity, on padded batches the export never saw."""
    config = SHAPES["tiny"].replace(num_hidden_layers=2, intermediate_size=64, conv_dim=(16,) * 7)
    torch.manual_seed(0)
    head = head_config(heads=2, compression=8, embedding=8, mean_norm=mean_norm)
    model = TaskModel("cm", Frontend(config), ["spoof", "bonafide"], head)
    with torch.no_grad():
        randomise_gates(model.frontend, torch.Generator().manual_seed(0), spread=1.5)
        for name, p in model.frontend.named_parameters():
            if "norm" in name:  # the channel mean of a LayerNorm output is its affine's doing: make it matter
                p.add_(torch.randn_like(p) * 0.3)
        model.loss.norm.running_mean.normal_()
        model.loss.norm.running_var.uniform_(0.5, 2.0)
    calibration = export.LinearCalibration((1.5,), -0.2, 0.5)
    scoring = {"calibration": calibration.to_dict(), "threshold": 0.0, "threshold_rule": "test"}
    written, checked = Bundle.write(model.compacted(), scoring, tmp_path / "cm", parity_seconds=[0.6, 1.3],
                                    exporter=exporter)
    assert set(checked) == {"embeddings", "scores", "llrs"} and max(c["scaled"] for c in checked.values()) <= 1e-4
    onnx_graph = OnnxModel(written.directory / "model.onnx")
    worst = parity(written.graph, onnx_graph, [1.9, 0.5, 1.1], seed=5)
    assert max(w["scaled"] for w in worst.values()) <= 1e-4
