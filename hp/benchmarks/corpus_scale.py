"""VoxCeleb at its real size: the SV prepare, manifests and score stages on a tree of VoxCeleb's layout and counts.

    python -m hp.benchmarks corpus-scale [--root bench/corpus-scale] [--scale 1.0] [--out FILE] [--json]

writes (once; cached under --root, keyed by its spec) VoxCeleb1 (1,251 speakers, 153,516 utterances) and
VoxCeleb2-dev (5,994 speakers, 1,092,009 utterances) as `wav/<speaker>/<video>/<NNNNN>.wav` of short synthetic
clips (CLIP_SECONDS: one 4 KiB block each, ~5 GB in all), and the cleaned trial lists O, E, H at their released
sizes (37,611 / 579,818 / 550,894 trials; E and H over all VoxCeleb1 speakers, H's non-targets within one of 24
speaker groups as the real list's within nationality and gender). Then it runs `python -m stages.<stage> sv` for
prepare, manifests (decode check on) and score (AS-norm over the VoxCeleb2 speakers, the bootstrap, the LTAS
baseline) in a workspace under --root, with `--model` (a compact SV model, models/sv/compact after `make repro`),
and prints per stage its wall time and peak RSS, and per section of the score stage (hp.utils.timing) the same.

The clips are short so that the tree fits a laptop's disk: costs that scale with files, trials and speakers are
real; costs that scale with audio length (decoding, embedding) are not, and `decode_check_real_length` measures the
audio check again (hp.benchmarks.audio_check) on files of VoxCeleb1's mean length, 8.2 s, as WAV and as FLAC.
Counts are those of https://www.robots.ox.ac.uk/~vgg/data/voxceleb/ (VoxCeleb1: 1,251 speakers, 153,516 utterances;
VoxCeleb2 dev: 5,994 speakers, 1,092,009 utterances) and the cleaned lists' line counts.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from hp.benchmarks.audio_check import check_rates
from hp.data.audio import SAMPLE_RATE
from hp.data.voxceleb import TRIAL_LISTS
from hp.utils import timing
from hp.utils.files import atomic_path

ROOT = Path(__file__).resolve().parents[2]
CLIP_SECONDS = 0.12  # 1,920 samples: 3,884 bytes of WAV, one 4 KiB block
UTTERANCES_PER_VIDEO = 7  # VoxCeleb1 ~6.8, VoxCeleb2 dev ~7.5
H_GROUPS = 24  # VoxCeleb1-H: non-target pairs share nationality and gender
REAL_LENGTH_SECONDS, REAL_LENGTH_FILES = 8.2, 4000  # VoxCeleb1's mean utterance length


@dataclass(frozen=True)
class Spec:
    """What the tree holds; `scale` shrinks every count (at least 2 speakers, 2 utterances each, 10 trials)."""

    vox1_speakers: int = 1251
    vox1_utterances: int = 153_516
    o_speakers: int = 40  # the speakers of VoxCeleb1-O (its test part)
    vox2_speakers: int = 5994
    vox2_utterances: int = 1_092_009
    trials_o: int = 37_611  # veri_test2.txt
    trials_e: int = 579_818  # list_test_all2.txt
    trials_h: int = 550_894  # list_test_hard2.txt
    seed: int = 0

    @classmethod
    def scaled(cls, scale: float, seed: int = 0) -> Spec:
        full = cls()

        def n(value: int, least: int) -> int:
            return max(least, round(value * scale))
        vox1, vox2 = n(full.vox1_speakers, 4), n(full.vox2_speakers, 2)
        return cls(vox1, n(full.vox1_utterances, 2 * vox1), min(n(full.o_speakers, 2), vox1), vox2,
                   n(full.vox2_utterances, 2 * vox2), n(full.trials_o, 10), n(full.trials_e, 10),
                   n(full.trials_h, 10), seed)

    def key(self) -> str:
        return hashlib.sha256(json.dumps({**asdict(self), "clip": CLIP_SECONDS}).encode()).hexdigest()[:12]


# ---- the tree ---------------------------------------------------------------------------------------------
def speaker_ids(part: str, n: int) -> list[str]:
    """VoxCeleb's id style; VoxCeleb1's (id1NNNN) and VoxCeleb2's (id0NNNN) never collide."""
    return [f"id{1 if part == 'voxceleb1' else 0}{i:04d}" for i in range(1, n + 1)]


def utterance_counts(speakers: int, utterances: int) -> np.ndarray:
    counts = np.full(speakers, utterances // speakers)
    counts[:utterances % speakers] += 1
    return counts


def video_id(speaker: str, video: int) -> str:
    """An 11-character YouTube-style id, fixed by (speaker, video)."""
    return base64.urlsafe_b64encode(hashlib.md5(f"{speaker}/{video}".encode()).digest())[:11].decode()


def utterance_names(speaker: str, count: int) -> list[str]:
    return [f"{speaker}/{video_id(speaker, k // UTTERANCES_PER_VIDEO)}/{k % UTTERANCES_PER_VIDEO + 1:05d}.wav"
            for k in range(count)]


def _wav_header(samples: int) -> bytes:
    data = 2 * samples
    return (b"RIFF" + (36 + data).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
            + (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + SAMPLE_RATE.to_bytes(4, "little")
            + (2 * SAMPLE_RATE).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
            + b"data" + data.to_bytes(4, "little"))


def speaker_clips(seed: int, part: int, speaker: int, count: int) -> np.ndarray:
    """[count, samples] int16: a voice of the speaker's own pitch and timbre, each clip another phase and noise."""
    rng = np.random.default_rng((seed, part, speaker))
    samples = round(CLIP_SECONDS * SAMPLE_RATE)
    t = np.arange(samples) / SAMPLE_RATE
    f0, tilt = rng.uniform(90, 260), rng.uniform(0.2, 0.8)
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    wave = 0.3 * np.sin(2 * np.pi * f0 * t + phase) + 0.3 * tilt * np.sin(2 * np.pi * 2 * f0 * t + 2 * phase)
    wave += 0.05 * rng.standard_normal((count, samples))
    return (np.clip(wave, -1, 1) * 32767).astype("<i2")


def _write_speaker(job: tuple[str, int, int, str, int, int]) -> int:
    wav_dir, seed, part, speaker, index, count = job
    header = _wav_header(round(CLIP_SECONDS * SAMPLE_RATE))
    clips = speaker_clips(seed, part, index, count)
    for name, clip in zip(utterance_names(speaker, count), clips):
        path = os.path.join(wav_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(header + clip.tobytes())
    return count


def write_tree(wav_dir: Path, seed: int, part: int, speakers: list[str], counts: np.ndarray, processes: int) -> None:
    jobs = [(str(wav_dir), seed, part, s, i, int(c)) for i, (s, c) in enumerate(zip(speakers, counts))]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for _ in pool.imap_unordered(_write_speaker, jobs, chunksize=16):
            pass


# ---- trial lists ------------------------------------------------------------------------------------------
def draw_trials(speaker: np.ndarray, n: int, rng: np.random.Generator,
                group: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label, enroll row, test row) of `n` trials over utterances of `speaker` (codes, each speaker's rows
    contiguous), half target; a non-target's test utterance is drawn from the enrollment speaker's `group` (codes
    per speaker) when given, else from anyone else."""
    starts = np.flatnonzero(np.r_[True, speaker[1:] != speaker[:-1]])
    counts = np.diff(np.r_[starts, len(speaker)])
    targets = n // 2
    i = rng.integers(len(speaker), size=n)
    s = speaker[i]
    offset = i[:targets] - starts[s[:targets]]
    j = np.empty(n, dtype=np.int64)
    j[:targets] = starts[s[:targets]] + (offset + 1 + rng.integers(counts[s[:targets]] - 1)) % counts[s[:targets]]
    # non-targets: redraw until the speakers differ (each draw collides with probability ~1 / speakers in a pool)
    pool_of = np.zeros(len(speaker), dtype=np.int64) if group is None else group[speaker]
    order = np.argsort(pool_of, kind="stable")
    pool_start = np.searchsorted(pool_of[order], np.arange(pool_of.max() + 1))
    pool_size = np.bincount(pool_of, minlength=pool_of.max() + 1)
    todo = np.arange(targets, n)
    while len(todo):
        p = pool_of[i[todo]]
        j[todo] = order[pool_start[p] + rng.integers(pool_size[p])]
        todo = todo[speaker[j[todo]] == speaker[i[todo]]]
    label = np.r_[np.ones(targets, dtype=np.int64), np.zeros(n - targets, dtype=np.int64)]
    shuffle = rng.permutation(n)
    return label[shuffle], i[shuffle], j[shuffle]


def write_trial_list(path: Path, label: np.ndarray, enroll: np.ndarray, test: np.ndarray, utts: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{y} {utts[e]} {utts[t]}\n" for y, e, t in zip(label, enroll, test)))


def write_lists(vox1_dir: Path, spec: Spec, speakers: list[str], counts: np.ndarray) -> None:
    utts = np.array([u for s, c in zip(speakers, counts) for u in utterance_names(s, int(c))])
    speaker = np.repeat(np.arange(len(speakers)), counts)
    rng = np.random.default_rng((spec.seed, 7))
    o_rows = speaker >= len(speakers) - spec.o_speakers  # VoxCeleb1-O tests the last o_speakers speakers
    o_utts, o_speaker = utts[o_rows], speaker[o_rows] - speaker[o_rows].min()
    groups = np.arange(len(speakers)) % min(H_GROUPS, len(speakers) // 2)
    for name, (n, u, spk, grp) in {"O": (spec.trials_o, o_utts, o_speaker, None),
                                    "E": (spec.trials_e, utts, speaker, None),
                                    "H": (spec.trials_h, utts, speaker, groups)}.items():
        write_trial_list(vox1_dir / TRIAL_LISTS[name], *draw_trials(spk, n, rng, grp), u)


def ensure_corpus(root: Path, spec: Spec, processes: int = 2) -> tuple[Path, dict]:
    """The tree of `spec` under `root` (written once, then found by its key); returns it and how long writing took
    (0 when cached)."""
    done = root / f"voxceleb-{spec.key()}"
    if (done / "spec.json").is_file():
        return done, {"seconds": 0.0, "cached": True}
    start = time.perf_counter()
    partial = root / f".voxceleb-{spec.key()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    parts = {"voxceleb1": (spec.vox1_speakers, spec.vox1_utterances),
             "voxceleb2": (spec.vox2_speakers, spec.vox2_utterances)}
    for index, (part, (n_speakers, n_utts)) in enumerate(parts.items()):
        speakers, counts = speaker_ids(part, n_speakers), utterance_counts(n_speakers, n_utts)
        write_tree(partial / part / "wav", spec.seed, index, speakers, counts, processes)
        if part == "voxceleb1":
            write_lists(partial / part, spec, speakers, counts)
    (partial / "spec.json").write_text(json.dumps(asdict(spec)))
    partial.rename(done)
    return done, {"seconds": round(time.perf_counter() - start, 1), "cached": False}


# ---- the stages -------------------------------------------------------------------------------------------
def workspace_params(corpus: Path) -> dict:
    """This checkout's params.yaml, SV on the tree with all three lists; clips shorter than manifests' 1 s floor."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["sv"].update(corpus="voxceleb", trials=["O", "E", "H"], train_on=["voxceleb2"],
                                   voxceleb1_dir=str(corpus / "voxceleb1"), voxceleb2_dir=str(corpus / "voxceleb2"))
    params["manifests"].update(min_seconds=CLIP_SECONDS / 2, check_audio="decode", drop_invalid=False)
    return params


def run_stage(workspace: Path, stage: str) -> dict:
    """`python -m stages.<stage> sv` in `workspace`: wall time, peak RSS (of the stage process, or of the largest of
    the processes it started and waited for: the kernel reports the largest, not their sum) and the sections it
    timed. Its output goes to timings/<stage>.log."""
    sections, log = (workspace / "timings" / f"{stage}.{kind}" for kind in ("json", "log"))
    sections.parent.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), timing.ENV: str(sections)}
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}", "sv"], cwd=workspace, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"stages.{stage} sv failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    return {"stage": stage, "seconds": round(wall, 1), "peak_rss_gb": round(timing.peak_rss_gb(usage), 3),
            "sections": json.loads(sections.read_text()) if sections.is_file() else []}


def corpus_scale(args: argparse.Namespace) -> dict:
    root = Path(args.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    spec = Spec.scaled(args.scale, args.seed)
    corpus, written = ensure_corpus(root, spec, args.processes)
    workspace = root / "workspace"
    shutil.rmtree(workspace, ignore_errors=True)
    (workspace / "models" / "sv").mkdir(parents=True)
    (workspace / "metrics" / "sv").mkdir(parents=True)
    shutil.copytree(args.model, workspace / "models" / "sv" / "compact")
    shutil.copy(args.compact_metrics, workspace / "metrics" / "sv" / "compact.json")
    (workspace / "params.yaml").write_text(yaml.safe_dump(workspace_params(corpus), sort_keys=False))
    stages = [run_stage(workspace, stage) for stage in ("prepare", "manifests", "score")]
    summary = json.loads((workspace / "data" / "sv" / "manifests" / "summary.json").read_text())
    files = summary["train"] + summary["test"]
    manifests = stages[1]
    score = stages[2]
    scoring = [s for s in score["sections"] if not s["section"].startswith(("embed", "LTAS"))]
    scored = json.loads((workspace / "metrics" / "sv.json").read_text())
    result = {
        "benchmark": "corpus-scale", "spec": asdict(spec), "clip_seconds": CLIP_SECONDS, "tree": written,
        "files": {"train": summary["train"], "test": summary["test"]}, "trials": summary["kept"],
        "stages": stages,
        "manifests_files_per_s": round(files / manifests["seconds"], 1),
        "scoring_seconds": round(sum(s["seconds"] for s in scoring), 1),
        "score_stage_peak_rss_gb": score["peak_rss_gb"],
        "eer": {name: lst.get("asnorm", lst["cosine"])["eer"] for name, lst in scored["lists"].items()},
        # the check's rate on files of VoxCeleb's length (hp.benchmarks.audio_check), per format
        "decode_check_real_length": {fmt: check_rates(args.real_length_files, REAL_LENGTH_SECONDS, fmt,
                                                      [2])["results"] for fmt in ("wav", "flac")},
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
    return result


def add_parser(sub) -> None:
    p = sub.add_parser("corpus-scale", help="SV prepare, manifests and score on a VoxCeleb-size tree: time, memory")
    p.add_argument("--root", default="bench/corpus-scale", help="where the tree (cached) and the workspace go")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of VoxCeleb's counts (speakers, files, trials)")
    p.add_argument("--model", type=Path, default=Path("models/sv/compact"), help="a compact SV task model")
    p.add_argument("--compact-metrics", type=Path, default=Path("metrics/sv/compact.json"),
                   help="the compact stage's metrics of that model (the score stage reads them)")
    p.add_argument("--processes", type=int, default=2, help="processes writing the tree")
    p.add_argument("--real-length-files", type=int, default=REAL_LENGTH_FILES,
                   help="files of VoxCeleb1's mean length the audio check is timed on again, per format")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(run=corpus_scale)

