"""hp.data.convert: m4a tree -> 16 kHz mono PCM16 wav tree, with a fake ffmpeg (ffmpeg is not installed here).

The ".m4a" sources are PCM16 WAV data (44.1 kHz or 16 kHz stereo); the fake ffmpeg checks it is called with
the documented arguments, downmixes, resamples linearly to 16 kHz and writes PCM16 WAV, and fails on any
source whose name contains "broken" (after writing a partial output, as a real ffmpeg may). Only the
documented command and the missing-ffmpeg case start the CLI as a subprocess (`import hp` loads torch, seconds
per start); the rest call main() in-process.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hp.data import convert

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 0.25
FAKE_FFMPEG = """\
#!{python}
# stdlib only (wave, array): numpy + soundfile would cost more start-up time than the conversion itself
import array
import sys
import wave
from pathlib import Path

args = sys.argv[1:]
def value(flag):
    return args[args.index(flag) + 1]
for flag in ("-nostdin", "-y"):
    assert flag in args, f"missing {{flag}}: {{args}}"
assert value("-loglevel") == "error" and value("-ac") == "1" and value("-ar") == "16000", args
assert value("-c:a") == "pcm_s16le" and value("-f") == "wav", args
src, out = Path(value("-i")), Path(args[-1])
with open(Path(__file__).with_name("calls.log"), "a") as log:
    log.write(f"{{src}}\\t{{out}}\\n")
if "broken" in src.name:
    out.write_bytes(b"RIFF\\0\\0")  # a partial output, left for the caller to clean up
    print(f"{{src}}: Invalid data found when processing input", file=sys.stderr)
    print("Error opening input files: Invalid data found when processing input", file=sys.stderr)
    sys.exit(1)
with open(src, "rb") as f, wave.open(f) as w:  # the ".m4a" is PCM16 WAV data: read by its header
    assert w.getsampwidth() == 2, w.getsampwidth()
    rate, channels = w.getframerate(), w.getnchannels()
    data = array.array("h", w.readframes(w.getnframes()))
mono = [sum(data[i:i + channels]) / channels for i in range(0, len(data), channels)]
n = round(len(mono) * 16000 / rate)
res = array.array("h")
for k in range(n):  # linear interpolation
    t = k * rate / 16000
    i = min(int(t), len(mono) - 1)
    j = min(i + 1, len(mono) - 1)
    res.append(round(mono[i] + (mono[j] - mono[i]) * (t - i)))
with open(out, "wb") as f, wave.open(f, "wb") as w:  # "-f wav": the output name need not end in .wav
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(16000)
    w.writeframes(res.tobytes())
"""


@pytest.fixture
def ffmpeg(tmp_path) -> Path:
    exe = tmp_path / "bin" / "ffmpeg"
    exe.parent.mkdir()
    exe.write_text(FAKE_FFMPEG.format(python=sys.executable))
    exe.chmod(0o755)
    return exe


def calls(ffmpeg: Path) -> list[tuple[Path, Path]]:
    log = ffmpeg.with_name("calls.log")
    return [tuple(map(Path, line.split("\t"))) for line in log.read_text().splitlines()] if log.exists() else []


def make_tree(aac: Path, extra: tuple[str, ...] = ()) -> dict[str, int]:
    """VoxCeleb2-like m4a tree; returns {relative wav path: frames expected at 16 kHz}."""
    rng = np.random.default_rng(0)
    names = [f"id0000{s}/vid{v}Xy_-{s}/0000{u}.m4a" for s in (1, 2) for v in (1, 2) for u in (1, 2)] + list(extra)
    expected = {}
    for i, name in enumerate(names):
        rate = 44_100 if i % 2 else 16_000
        n = int(SECONDS * rate)
        path = aac / name
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, rng.uniform(-0.5, 0.5, (n, 2)), rate, subtype="PCM_16", format="WAV")
        expected[str(Path(name).with_suffix(".wav"))] = int(round(n * 16_000 / rate))
    (aac / "id00001" / "readme.txt").write_text("not audio")  # not at */*/*.m4a: ignored
    return expected


def files(root: Path) -> set[str]:
    """Every file under root, hidden temp files included, as relative paths."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hp.data.convert", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def run_main(capsys, *args) -> tuple[int, list[str], dict | None]:
    """main() in-process (no interpreter start-up): exit code, stderr lines, parsed JSON summary."""
    code = convert.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, err.splitlines(), json.loads(out) if out.strip() else None


def test_cli_converts_tree_mirrored_16k_mono_pcm16(tmp_path, ffmpeg):
    aac, wav = tmp_path / "dev" / "aac", tmp_path / "dev" / "wav"
    expected = make_tree(aac)
    proc = run_cli(aac, wav, "--jobs", "3", "--ffmpeg", ffmpeg)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # tqdm stays quiet when stderr is not a terminal
    summary = json.loads(proc.stdout)
    assert set(summary) == {"converted", "skipped", "failed", "seconds"}
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (len(expected), 0, 0)
    assert files(wav) == set(expected)  # mirrored layout, nothing else (no temp files)
    for name in expected:
        info = sf.info(wav / name)
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "WAV"), name
        assert info.frames == expected[name], name
    # ffmpeg never writes under the final name: a hidden temp beside it, renamed afterwards
    for src, out in calls(ffmpeg):
        final = wav / src.relative_to(aac).with_suffix(".wav")
        assert out.parent == final.parent and out.name.startswith(".") and out != final


def test_second_run_skips_everything(tmp_path, ffmpeg, capsys):
    aac, wav = tmp_path / "aac", tmp_path / "wav"
    expected = make_tree(aac)
    assert run_main(capsys, aac, wav, "--ffmpeg", ffmpeg)[0] == 0
    before = {p: p.stat().st_mtime_ns for p in wav.rglob("*.wav")}
    n_calls = len(calls(ffmpeg))
    code, err, summary = run_main(capsys, aac, wav, "--ffmpeg", ffmpeg)
    assert (code, err) == (0, [])
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (0, len(expected), 0)
    assert len(calls(ffmpeg)) == n_calls  # ffmpeg not run at all
    assert {p: p.stat().st_mtime_ns for p in wav.rglob("*.wav")} == before


def test_stale_temp_is_not_done_and_is_replaced(tmp_path, ffmpeg, capsys):
    aac, wav = tmp_path / "aac", tmp_path / "wav"
    expected = make_tree(aac)
    name = sorted(expected)[0]
    stale = convert.temp_path(wav / name)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"RIFF half-written by a killed run")
    code, err, summary = run_main(capsys, aac, wav, "--ffmpeg", ffmpeg)
    assert (code, err) == (0, [])
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (len(expected), 0, 0)
    assert not stale.exists()
    assert files(wav) == set(expected)
    assert sf.info(wav / name).frames == expected[name]


def test_failure_reported_others_converted_nothing_left(tmp_path, ffmpeg, capsys):
    aac, wav = tmp_path / "aac", tmp_path / "wav"
    broken = "id00002/vid1Xy_-2/broken.m4a"
    expected = make_tree(aac, extra=(broken,))
    del expected[broken.replace(".m4a", ".wav")]
    code, err, summary = run_main(capsys, aac, wav, "--jobs", "2", "--ffmpeg", ffmpeg)
    assert code == 1
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (len(expected), 0, 1)
    assert len(err) == 1 and str(aac / broken) in err[0] and "Invalid data" in err[0], err
    assert files(wav) == set(expected)  # no wav and no temp file for the broken one
    # a rerun retries only the broken file, and fails again the same way
    code, err, summary = run_main(capsys, aac, wav, "--ffmpeg", ffmpeg)
    assert (code, len(err)) == (1, 1)
    assert (summary["converted"], summary["skipped"], summary["failed"]) == (0, len(expected), 1)


def test_many_failures_shown_up_to_five(tmp_path, ffmpeg, capsys):
    aac, wav = tmp_path / "aac", tmp_path / "wav"
    make_tree(aac, extra=tuple(f"id00003/v/broken{i}.m4a" for i in range(7)))
    code, err, summary = run_main(capsys, aac, wav, "--ffmpeg", ffmpeg)
    assert (code, summary["failed"]) == (1, 7)
    assert len(err) == 6 and "2 more" in err[-1], err


def test_interrupt_is_one_line_exit_130(tmp_path, ffmpeg, capsys, monkeypatch):
    aac, wav = tmp_path / "aac", tmp_path / "wav"
    make_tree(aac)
    real = convert.convert_file

    def convert_file(exe, src, dst):
        if src.name == "00002.m4a":
            raise KeyboardInterrupt
        return real(exe, src, dst)
    monkeypatch.setattr(convert, "convert_file", convert_file)
    code, err, summary = run_main(capsys, aac, wav, "--jobs", "1", "--ffmpeg", ffmpeg)
    assert (code, summary) == (130, None)
    assert len(err) == 1 and "interrupted" in err[0], err
    assert all(p.suffix == ".wav" and not p.name.startswith(".") for p in wav.rglob("*.*"))


def test_ffmpeg_missing_is_one_line_exit_2(tmp_path):
    aac = tmp_path / "aac"
    make_tree(aac)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = run_cli(aac, tmp_path / "wav", env={**os.environ, "PATH": str(empty)})
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("hp.data.convert: ffmpeg not found on PATH") and "--ffmpeg" in proc.stderr
    assert not (tmp_path / "wav").exists()


@pytest.mark.parametrize("layout", ["missing", "empty", "flat"])
def test_no_m4a_files_is_one_line_exit_2(tmp_path, ffmpeg, capsys, layout):
    aac = tmp_path / "voxceleb2" / "dev"
    if layout != "missing":
        aac.mkdir(parents=True)
    if layout == "flat":  # m4a files, but not at <speaker>/<video>/<utt>.m4a
        sf.write(aac / "00001.m4a", np.zeros((1600, 2)), 16_000, format="WAV")
    code, err, summary = run_main(capsys, aac, tmp_path / "wav", "--ffmpeg", ffmpeg)
    assert (code, summary) == (2, None)
    assert len(err) == 1 and str(aac) in err[0] and "dev/aac" in err[0], err
    assert not (tmp_path / "wav").exists()


def test_bad_ffmpeg_path_is_one_line_exit_2(tmp_path, capsys):
    aac = tmp_path / "aac"
    make_tree(aac)
    code, err, _ = run_main(capsys, aac, tmp_path / "wav", "--ffmpeg", tmp_path / "nope" / "ffmpeg")
    assert code == 2 and len(err) == 1 and "--ffmpeg" in err[0], err


def test_docstring_shows_the_voxceleb2_command():
    doc = textwrap.dedent(convert.__doc__)
    assert "python -m hp.data.convert /data/voxceleb2/dev/aac /data/voxceleb2/dev/wav --jobs" in doc
    assert "prepare.sv.voxceleb2_dir to /data/voxceleb2/dev" in doc
