"""python -m hp (hp.deploy.cli) on small bundles: each verb against the bundle's graph, batching, the ONNX runtime, the
resampler, and the one-line errors that leave no output behind."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from hp.data import resample as rs
from hp.data.audio import SAMPLE_RATE
import hp.deploy.cli
from hp.deploy.cli import main
from hp.deploy.export import Bundle
from hp.deploy.quantize import quantize
from hp.deploy.release import FP32, INT8, write_manifest
from hp.model.config import SHAPES
from hp.model.frontend import Frontend
from hp.tasks import TaskModel
from hp.utils.files import write_json

from helpers import ROOT_DIR, randomise_gates
from configs import head_config

HEAD = head_config(heads=2, compression=8, embedding=16)
SV_SCORING = {"threshold": 0.25, "threshold_rule": "EER of the cosine scores on trial list test"}
CM_SCORING = {"calibration": {"weights": [0.7], "bias": -0.4, "prior": 0.05}, "threshold": 0.1,
              "threshold_rule": "Bayes decision of the ASVspoof5 DCF"}


def small_model(task: str, norm: str, seed: int) -> TaskModel:
    """A compacted two-layer model; `norm` "layer" (pre-LN, LayerNorm CNN) or "group" (post-LN, GroupNorm)."""
    config = SHAPES["tiny"].replace(num_hidden_layers=2, intermediate_size=64, conv_dim=(16,) * 7,
                                    feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
                                    conv_bias=norm == "layer")
    torch.manual_seed(seed)
    labels = ["spk1", "spk2", "spk3"] if task == "sv" else ["spoof", "bonafide"]
    model = TaskModel(task, Frontend(config), labels, HEAD)
    with torch.no_grad():
        randomise_gates(model.frontend, torch.Generator().manual_seed(seed), spread=1.5)
    return model.compacted()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """SV: a LayerNorm-CNN model, written without model.onnx (the ONNX export costs ~30 s; the torch runtime
    does not read it); CM: a GroupNorm-CNN model through Bundle.write, ONNX included."""
    root = tmp_path_factory.mktemp("bundles")
    sv = small_model("sv", "layer", seed=0)
    sv.save(root / "sv")
    mean = np.random.default_rng(0).normal(0, 0.1, HEAD.embedding).tolist()
    write_json(root / "sv" / "scoring.json", {"task": "sv", "sample_rate": SAMPLE_RATE, "mean": mean,
                                              **SV_SCORING})
    write_manifest(root / "sv")
    Bundle.write(small_model("cm", "group", seed=1), CM_SCORING, root / "cm", parity_seconds=[0.5],
                 finish=lambda b: quantize(b.directory / FP32, b.directory / INT8, "dynamic"))
    return {task: Bundle.load(root / task) for task in ("sv", "cm")}


def write_wave(path, wave, rate=SAMPLE_RATE, fmt=None):
    sf.write(path, np.asarray(wave, dtype=np.float32), rate, subtype="FLOAT" if fmt is None else None, format=fmt)
    return str(path)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Noise files of different lengths (16 kHz float WAV), two of equal length; their samples by path."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(1)
    files = {}
    for name, seconds in (("a", 1.0), ("b", 0.37), ("c", 0.61), ("d", 0.37), ("e", 0.1)):
        wave = (0.1 * rng.standard_normal(round(seconds * SAMPLE_RATE))).astype(np.float32)
        files[write_wave(root / f"{name}.wav", wave)] = wave
    return files


def direct(bundle, wave):
    """The bundle's graph on one utterance alone."""
    return bundle.graph.run(wave[None], np.array([len(wave)], dtype=np.int64))


def run_cli(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def batches(monkeypatch):
    """Records the lengths of every batch the CLI runs."""
    seen = []
    make = hp.deploy.cli.make_runner

    def recording(*args):
        runner = make(*args)

        def run(wave, lengths):
            seen.append(lengths.tolist())
            return runner(wave, lengths)
        return run
    monkeypatch.setattr(hp.deploy.cli, "make_runner", recording)
    return seen


# ---- verbs ---------------------------------------------------------------------------------------------------
def test_embed_stdout_equals_graph(bundles, audio, capsys):
    path, wave = next(iter(audio.items()))
    status, out, err = run_cli(capsys, "embed", path, "--model", bundles["sv"].directory, "--threads", 1)
    assert status == 0 and err == ""
    name, values = out.rstrip("\n").split("\t")
    assert name == path
    np.testing.assert_allclose(np.array(values.split(), dtype=float), direct(bundles["sv"], wave)["embeddings"][0],
                               rtol=1e-6, atol=1e-7)  # printed with 7 significant digits


@pytest.mark.parametrize("task", ["sv", "cm"])
def test_batches_equal_one_at_a_time_in_input_order(bundles, audio, tmp_path, capsys, batches, task):
    """Files of different lengths padded into one batch, for the LayerNorm CNN (SV) and the GroupNorm one (CM,
    whose statistics leave the padding out): each file's embedding is its own, in input order."""
    paths = list(audio)
    status, _, _ = run_cli(capsys, "embed", *paths, "--model", bundles[task].directory, "--out", tmp_path / "e.npy")
    assert status == 0
    got = np.load(tmp_path / "e.npy")
    assert got.dtype == np.float32 and got.shape == (len(paths), HEAD.embedding)
    for row, path in zip(got, paths):
        np.testing.assert_allclose(row, direct(bundles[task], audio[path])["embeddings"][0], atol=1e-5)
    assert batches == [sorted(len(w) for w in audio.values())]  # one padded batch (60 s is plenty)


def test_embed_npz_and_small_batches(bundles, audio, tmp_path, capsys, batches):
    paths = list(audio)[::-1]
    status, _, _ = run_cli(capsys, "embed", *paths, "--model", bundles["sv"].directory, "--out", tmp_path / "e.npz",
                           "--batch-seconds", 0.5)
    assert status == 0 and len(batches) > 1
    with np.load(tmp_path / "e.npz") as z:
        assert z["paths"].tolist() == paths
        for row, path in zip(z["embeddings"], paths):
            np.testing.assert_allclose(row, direct(bundles["sv"], audio[path])["embeddings"][0], atol=1e-5)


def test_verify_is_mean_subtracted_cosine(bundles, audio, capsys):
    bundle = bundles["sv"]
    enroll, test = list(audio)[:2]
    mean = np.array(bundle.scoring["mean"])
    e, t = (direct(bundle, audio[p])["embeddings"][0].astype(np.float64) - mean for p in (enroll, test))
    expected = e @ t / np.linalg.norm(e) / np.linalg.norm(t)
    status, out, _ = run_cli(capsys, "verify", enroll, test, "--model", bundle.directory)
    result = json.loads(out)
    assert status == 0 and out.count("\n") == 1
    assert result["enroll"] == enroll and result["test"] == test
    assert result["score"] == pytest.approx(expected, abs=1e-6)
    assert result["threshold"] == SV_SCORING["threshold"]
    assert result["decision"] == ("target" if result["score"] >= SV_SCORING["threshold"] else "nontarget")
    for threshold, decision in ((result["score"] - 1e-3, "target"), (result["score"] + 1e-3, "nontarget")):
        _, out, _ = run_cli(capsys, "verify", enroll, test, "--model", bundle.directory, "--threshold", threshold)
        assert json.loads(out)["decision"] == decision and json.loads(out)["threshold"] == threshold


def test_detect_llrs_and_decisions(bundles, audio, tmp_path, capsys):
    bundle, paths = bundles["cm"], list(audio)
    expected = np.array([direct(bundle, audio[p])["llrs"][0] for p in paths])
    status, out, _ = run_cli(capsys, "detect", *paths, "--model", bundle.directory)
    lines = out.splitlines()
    assert status == 0 and lines[0] == "path\tllr\tdecision" and len(lines) == len(paths) + 1
    rows = [line.split("\t") for line in lines[1:]]
    assert [r[0] for r in rows] == paths
    llrs = np.array([float(r[1]) for r in rows])
    np.testing.assert_allclose(llrs, expected, rtol=1e-6, atol=1e-6)
    assert [r[2] for r in rows] == ["bonafide" if x >= CM_SCORING["threshold"] else "spoof" for x in llrs]
    # a threshold between two LLRs splits the decisions there; --out writes the same TSV
    threshold = float(np.sort(llrs)[2:4].mean())
    status, _, _ = run_cli(capsys, "detect", *paths, "--model", bundle.directory, "--threshold", threshold,
                           "--out", tmp_path / "cm.tsv")
    rows = [line.split("\t") for line in (tmp_path / "cm.tsv").read_text().splitlines()[1:]]
    assert status == 0 and [r[2] for r in rows] == ["bonafide" if x >= threshold else "spoof" for x in llrs]
    assert {r[2] for r in rows} == {"bonafide", "spoof"}


def test_onnx_runtime_matches_torch(bundles, audio, tmp_path, capsys):
    folder = bundles["cm"].directory
    outputs = {}
    for runtime, options in (("torch", ["--model", folder, "--runtime", "torch"]),
                             ("onnx", ["--model", folder, "--runtime", "onnx"]),
                             ("int8", ["--model", folder, "--int8"]),
                             ("int8 file", ["--model", folder / "model.int8.onnx"])):  # the graph named by its file
        status, out, _ = run_cli(capsys, "detect", *audio, *options, "--threads", 1)
        assert status == 0
        llrs = [float(line.split("\t")[1]) for line in out.splitlines()[1:]]
        status, _, _ = run_cli(capsys, "embed", *audio, *options, "--out", tmp_path / f"{runtime}.npy")
        assert status == 0
        outputs[runtime] = np.array(llrs), np.load(tmp_path / f"{runtime}.npy")
    for ours, theirs in zip(outputs["torch"], outputs["onnx"]):
        np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)
    # the int8 graph: another computation, close to fp32's (its rounding moves an LLR by a few hundredths here)
    llrs, embeddings = outputs["int8"]
    np.testing.assert_array_equal(outputs["int8 file"][1], embeddings)
    assert not np.array_equal(embeddings, outputs["onnx"][1])
    np.testing.assert_allclose(llrs, outputs["onnx"][0], atol=0.1)


def test_other_rates_and_channels_are_resampled_and_averaged(bundles, tmp_path, capsys):
    rng = np.random.default_rng(2)
    stereo = (0.1 * rng.standard_normal((44100 // 2, 2))).astype(np.float32)
    path = write_wave(tmp_path / "stereo.flac", stereo, 44100, fmt="FLAC")
    decoded = sf.read(path, dtype="float32")[0]  # FLAC is 16-bit PCM here
    mono = rs.resample(decoded.mean(1), 44100, SAMPLE_RATE)
    np.testing.assert_allclose(hp.deploy.cli.read_audio(path), mono, atol=1e-7)
    assert len(mono) == 8000
    status, out, _ = run_cli(capsys, "embed", path, "--model", bundles["sv"].directory)
    np.testing.assert_allclose(np.array(out.split("\t")[1].split(), dtype=float),
                               direct(bundles["sv"], mono)["embeddings"][0], rtol=1e-6, atol=1e-7)


def test_module_entry_point(bundles, audio):
    """`python -m hp` as a user runs it: --help, one verb, and an error's exit status."""
    def python_m_hp(*args):
        return subprocess.run([sys.executable, "-m", "hp", *map(str, args)], cwd=ROOT_DIR, capture_output=True,
                              text=True, timeout=120)
    done = python_m_hp("--help")
    assert done.returncode == 0 and "usage: python -m hp" in done.stdout and "verify" in done.stdout
    path = next(iter(audio))
    done = python_m_hp("verify", path, path, "--model", bundles["sv"].directory)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["score"] == pytest.approx(1.0, abs=1e-5)
    assert json.loads(done.stdout)["decision"] == "target"


# ---- errors ----------------------------------------------------------------------------------------------------
def bad_inputs(root):
    (root / "text.wav").write_text("not audio\n")
    write_wave(root / "empty.wav", np.zeros(0))
    write_wave(root / "short.wav", np.zeros(int(0.09 * SAMPLE_RATE)))
    write_wave(root / "short8k.wav", np.zeros(700), rate=8000)  # 1400 samples at 16 kHz: still < 0.1 s
    (root / "bad.mp3").write_bytes(b"\xff\xfb\x90\x64" + np.random.default_rng(0).bytes(3000))
    return {"missing": (root / "missing.wav", "file not found"),
            "text": (root / "text.wav", "not a readable audio file"),
            "empty": (root / "empty.wav", "no audio samples"),
            "short": (root / "short.wav", "at least 0.1 s"),
            "short8k": (root / "short8k.wav", "at least 0.1 s"),
            # a damaged MP3: libsndfile's own words would be "File does not exist"
            "mp3": (root / "bad.mp3", "not a readable audio file (its content could not be decoded)")}


@pytest.mark.parametrize("case", ["missing", "text", "empty", "short", "short8k", "mp3"])
@pytest.mark.parametrize("verb", ["embed", "detect"])
def test_a_bad_file_is_skipped_with_one_line_and_the_others_are_written(bundles, audio, tmp_path, capsys, case,
                                                                          verb):
    path, reason = bad_inputs(tmp_path)[case]
    good = list(audio)[:2]
    task = "sv" if verb == "embed" else "cm"
    out = tmp_path / "out" / ("e.npz" if verb == "embed" else "cm.tsv")
    status, stdout, err = run_cli(capsys, verb, good[0], path, good[1], "--model", bundles[task].directory,
                                  "--out", out)
    assert status == 1 and stdout == ""
    assert err.count("\n") == 1 and err.startswith(f"python -m hp: skipped {path}: ") and reason in err, err
    alone = run_cli(capsys, verb, *good, "--model", bundles[task].directory, "--out", tmp_path / out.name)[0]
    assert alone == 0
    if verb == "embed":  # the files read, as if the bad one had not been given
        got, want = np.load(out), np.load(tmp_path / out.name)
        assert got["paths"].tolist() == [str(g) for g in good]
        np.testing.assert_array_equal(got["embeddings"], want["embeddings"])
    else:
        assert out.read_text() == (tmp_path / out.name).read_text()
    # alone, or with nothing else usable, the bad file is an error: status 2, nothing written
    status, stdout, err = run_cli(capsys, verb, path, "--model", bundles[task].directory, "--out",
                                  tmp_path / "none" / out.name)
    assert status == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith(f"python -m hp: error: no input could be used: {path}: ") and reason in err, err
    assert not (tmp_path / "none").exists()


def test_npy_rows_stay_in_input_order_with_nan_for_a_skipped_file(bundles, audio, tmp_path, capsys):
    good = list(audio)[:2]
    status, _, err = run_cli(capsys, "embed", good[0], tmp_path / "gone.wav", good[1], "--model",
                             bundles["sv"].directory, "--out", tmp_path / "e.npy")
    rows = np.load(tmp_path / "e.npy")
    assert status == 1 and "gone.wav: file not found" in err and rows.shape[0] == 3
    assert np.isnan(rows[1]).all() and np.isfinite(rows[[0, 2]]).all()


def test_either_file_of_a_trial_is_an_error(bundles, audio, tmp_path, capsys):
    status, stdout, err = run_cli(capsys, "verify", next(iter(audio)), tmp_path / "gone.wav", "--model",
                                  bundles["sv"].directory)
    assert status == 2 and stdout == "" and err == f"python -m hp: error: {tmp_path / 'gone.wav'}: file not found\n"


def test_bundle_and_option_errors(bundles, audio, tmp_path, capsys):
    good = next(iter(audio))
    sv, cm = bundles["sv"].directory, bundles["cm"].directory
    cases = [
        (["verify", good, good, "--model", cm], str(cm), "verify needs an SV bundle"),
        (["detect", good, "--model", sv, "--out", tmp_path / "cm.tsv"], str(sv), "detect needs a CM bundle"),
        (["embed", good, "--model", sv, "--out", tmp_path / "e.txt"], str(tmp_path / "e.txt"), ".npy"),
        (["embed", good, "--model", tmp_path / "nowhere"], str(tmp_path / "nowhere"), "no such model folder"),
        (["embed", good, "--model", sv / "task.json"], str(sv / "task.json"), "takes a release folder, or its"),
        (["embed", good, "--model", sv, "--runtime", "onnx"], str(sv / "model.onnx"), "missing; this bundle has no onnx"),
        (["embed", good, "--model", sv, "--out", tmp_path], str(tmp_path), "is a directory"),
        (["detect", tmp_path / "a\tb.wav", "--model", cm], repr(str(tmp_path / "a\tb.wav")), "cannot be written"),
    ]
    for argv, name, reason in cases:
        status, stdout, err = run_cli(capsys, *argv)
        assert status == 2 and stdout == "", argv
        assert err.count("\n") == 1 and err.startswith(f"python -m hp: error: {name}") and reason in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    broken = tmp_path / "broken"
    shutil.copytree(sv, broken)
    scoring = json.loads((broken / "scoring.json").read_text())
    write_json(broken / "scoring.json", {**scoring, "mean": scoring["mean"][:-1]})
    status, _, err = run_cli(capsys, "verify", good, good, "--model", broken)
    assert status == 2 and err == f"python -m hp: error: {broken / 'scoring.json'}: checksum differs from " \
                                  "SHA256SUMS's (changed or corrupt since export); re-download or re-export the model\n"
    write_manifest(broken)  # the changed file listed anew: now its content is refused
    status, _, err = run_cli(capsys, "verify", good, good, "--model", broken)
    assert status == 2 and err == f"python -m hp: error: {broken / 'scoring.json'}: mean must be null or 16 finite " \
                                  "numbers (the embedding size)\n"
    status, _, err = run_cli(capsys, "embed", good, "--batch-seconds", "0")  # argparse's own usage error
    assert status == 2 and "--batch-seconds" in err


# ---- the resampler -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000, 16001])
def test_resampled_sine_is_the_analytic_one(rate):
    t = np.arange(rate) / rate  # 1 s
    y = rs.resample(0.5 * np.sin(2 * np.pi * 1000 * t), rate, SAMPLE_RATE)
    assert len(y) == SAMPLE_RATE
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(len(y)) / SAMPLE_RATE)
    edge = SAMPLE_RATE // 20  # the filter reaches ~2 ms beyond either end: 50 ms is well clear
    assert np.abs(y - expected)[edge:-edge].max() < 1e-4


def test_resampler_removes_what_the_new_rate_cannot_hold():
    rate = 48000
    t = np.arange(rate) / rate
    edge = SAMPLE_RATE // 20
    aliased = rs.resample(np.sin(2 * np.pi * 10000 * t), rate, SAMPLE_RATE)  # would fold onto 6 kHz
    assert np.abs(aliased[edge:-edge]).max() < 1e-3  # > 60 dB down
    kept = rs.resample(np.sin(2 * np.pi * 7000 * t), rate, SAMPLE_RATE)  # within the passband (7.6 kHz cutoff)
    assert np.abs(kept[edge:-edge]).max() == pytest.approx(1.0, abs=0.01)


def test_resampler_identity_lengths_and_paths(monkeypatch):
    x = np.random.default_rng(3).standard_normal(4410).astype(np.float32)
    assert np.array_equal(rs.resample(x, SAMPLE_RATE, SAMPLE_RATE), x)
    for orig, n in ((44100, 4410), (8000, 3), (48000, 1), (48000, 0)):
        assert len(rs.resample(x[:n], orig, SAMPLE_RATE)) == -(-n * SAMPLE_RATE // orig)
    polyphase = rs.resample(x, 44100, SAMPLE_RATE)
    monkeypatch.setattr(rs, "MAX_BANK", 0)  # the gathering path, used where the kernel bank would be large
    np.testing.assert_allclose(rs.resample(x, 44100, SAMPLE_RATE), polyphase, atol=1e-5)
    with pytest.raises(ValueError, match="one channel"):
        rs.resample(np.zeros((10, 2)), 44100, SAMPLE_RATE)


def test_stereo_is_averaged(tmp_path):
    rng = np.random.default_rng(4)
    stereo = (0.1 * rng.standard_normal((2000, 2))).astype(np.float32)
    path = write_wave(tmp_path / "s.wav", stereo)
    np.testing.assert_allclose(hp.deploy.cli.read_audio(path), stereo.mean(1), atol=1e-7)
