"""The released folder: checksums that refuse a changed file with one line, the int8 graph beside the fp32 one, the
ONNX path in a process that has only numpy and onnxruntime, a hub id resolved through the hub client."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

import hp.deploy.release as release
from hp.deploy.export import Bundle, random_batch
from hp.deploy.quantize import agreement, quantize
from hp.deploy.release import FP32, INT8, MANIFEST, OnnxModel, verify, write_manifest
from hp.errors import CheckpointError
from helpers import ROOT_DIR, SV_SCORING as SCORING, compact_sv_model, only_importing


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An SV release with both graphs: the fp32 one checked against PyTorch, the int8 one (dynamic: no data)."""
    out = tmp_path_factory.mktemp("release") / "sv"
    Bundle.write(compact_sv_model(), SCORING, out, parity_seconds=[0.6],
                 finish=lambda b: quantize(b.directory / FP32, b.directory / INT8, "dynamic"))
    return out


def test_manifest_lists_every_file_and_verifies(folder):
    lines = (folder / MANIFEST).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == sorted(["model.safetensors", "task.json", FP32, INT8,
                                                              "scoring.json"])
    assert sorted(verify(folder)) == sorted(line.split("  ")[1] for line in lines)
    listed = subprocess.run(["sha256sum", "-c", "--quiet", MANIFEST], cwd=folder, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stdout + listed.stderr  # the coreutils format, as the card says


@pytest.mark.parametrize("change, message", [
    (lambda d: (d / INT8).write_bytes((d / INT8).read_bytes()[:-1] + b"\0"), f"{INT8}: checksum differs"),
    (lambda d: (d / "task.json").unlink(), "task.json: listed in SHA256SUMS but missing"),
    (lambda d: (d / MANIFEST).write_text("not a checksum line\n"), "SHA256SUMS:1: not '<sha256>  <file name>'"),
    (lambda d: (d / MANIFEST).unlink(), "SHA256SUMS: missing"),
])
def test_a_changed_folder_is_refused_with_one_line(folder, tmp_path, change, message):
    changed = tmp_path / "sv"
    changed.mkdir()
    for f in folder.iterdir():
        (changed / f.name).write_bytes(f.read_bytes())
    change(changed)
    for load in (verify, Bundle.load, OnnxModel.open):
        with pytest.raises(CheckpointError, match=message) as e:
            load(changed)
        assert "\n" not in str(e.value)


def test_int8_graph_agrees_with_fp32(folder):
    """Dynamic int8 of a random (untrained) compact model on noise: the embeddings keep their direction. A
    trained model on speech agrees more closely; the export stage measures that on the test set."""
    wave, lengths = random_batch([0.7, 1.5, 2.2], seed=4)
    fp32, int8 = (OnnxModel(folder / name).run(wave, lengths) for name in (FP32, INT8))
    assert (folder / INT8).stat().st_size < (folder / FP32).stat().st_size
    graph = onnx.load(folder / INT8).graph
    weights = {t.name for t in graph.initializer}
    assert any(n.op_type == "MatMulInteger" for n in graph.node)  # every projection with a weight is int8 now
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and set(n.input) & weights]
    assert agreement(fp32, int8)["embeddings"]["min_cosine"] > 0.95


def test_static_quantisation_needs_calibration_and_uses_it(folder, tmp_path):
    with pytest.raises(Exception, match="calibration utterances"):
        quantize(folder / FP32, tmp_path / "none.onnx", "static", calibration=[])
    batches = [random_batch([s], seed=i) for i, s in enumerate((0.8, 1.3, 2.0))]
    quantize(folder / FP32, tmp_path / "static.onnx", "static", calibration=batches)
    wave, lengths = random_batch([1.1], seed=9)
    fp32, int8 = (OnnxModel(p).run(wave, lengths) for p in (folder / FP32, tmp_path / "static.onnx"))
    assert agreement(fp32, int8)["embeddings"]["min_cosine"] > 0.9
    with pytest.raises(ValueError, match="method"):
        quantize(folder / FP32, tmp_path / "x.onnx", "float16")


def test_the_onnx_path_runs_with_only_numpy_and_onnxruntime(folder):
    """A fresh process where any third-party import but numpy's and onnxruntime's fails (torch, soundfile, pandas,
    safetensors, yaml: what a server without hp's training stack lacks) opens the folder and runs both graphs."""
    script = only_importing("numpy", "onnxruntime", "hp") + textwrap.dedent(f"""
        sys.path.insert(0, {str(ROOT_DIR)!r})
        import numpy as np
        from hp.deploy.release import OnnxModel
        for int8 in (False, True):
            model, scoring = OnnxModel.open({str(folder)!r}, int8=int8, threads=1)
            out = model.run(np.zeros((1, 16000), np.float32), np.array([16000]))
            print(out["embeddings"].shape, scoring["task"])
        assert "torch" not in sys.modules
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ["(1, 12) sv", "(1, 12) sv"]


def test_a_hub_id_is_fetched_through_the_hub_client(folder, monkeypatch, tmp_path):
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo: asked.append(repo) or str(folder))
    monkeypatch.chdir(tmp_path)
    assert release.resolve("someone/hp-sv") == folder and asked == ["someone/hp-sv"]
    model, scoring = OnnxModel.open("someone/hp-sv")
    assert scoring == json.loads((folder / "scoring.json").read_text())

    def offline(repo):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nmore")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match=r"someone/hp-sv: not a folder here, and the hub did not give it "
                                              r"\(OSError: We couldn't connect.*files\)$"):
        release.resolve("someone/hp-sv")
    with pytest.raises(CheckpointError, match="no such model folder"):
        release.resolve("./not/here")


def test_agreement_measures():
    ref = {"embeddings": np.array([[1.0, 0.0], [0.0, 2.0]]), "scores": np.array([0.0, 2.0])}
    got = {"embeddings": np.array([[1.0, 1.0], [0.0, 3.0]]), "scores": np.array([0.5, 2.0])}
    m = agreement(ref, got)
    assert m["embeddings"] == {"min_cosine": pytest.approx(2 ** -0.5), "median_cosine": pytest.approx((1 + 2 ** -0.5) / 2)}
    assert m["scores"] == {"max_abs": 0.5, "max_abs_over_std": 0.5}
