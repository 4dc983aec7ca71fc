"""python -m hp: off-the-shelf speaker embeddings, verification and spoofing detection with an exported bundle.

A bundle is the directory the pipeline's export stage writes (models/<task>/export, see hp.deploy.export): the
compacted model for PyTorch, the same graph as ONNX, and scoring.json (thresholds, the SV mean embedding, the CM
calibration). Audio is read with soundfile (WAV, FLAC, OGG, ...), averaged over channels and resampled to 16 kHz
(hp.data.audio.read_audio). Every input is checked before the model runs, and output files are written whole or not at
all. Of several files, one that cannot be used (missing, unreadable, too short) is skipped: the others' results are
written, each skipped file gets one stderr line naming it, and the exit status is 1. Any other user error (every
file unusable, either file of a trial, the wrong bundle, a bad option) prints one line naming the file and exits
with status 2, leaving nothing behind.

Why one module of ~450 lines: it is the command line's whole contract (the verbs, their options and help, and the
checks every input gets before the model runs), read top to bottom as its reference; its parts (audio, the model,
verbs, argument parsing) are marked below.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hp.data import audio
from hp.data.audio import SAMPLE_RATE, pad_batch
from hp.errors import TRACEBACK_ENV, CheckpointError, HPError, one_line
from hp.evaluation.scoring import length_batches
from hp.utils.files import atomic_path

PROG = "python -m hp"
MIN_SECONDS = 0.1  # shortest input accepted (after resampling), unless the model's receptive field is longer
DEFAULT_MODELS = {"sv": "models/sv/export", "cm": "models/cm/export"}
EMBED_SUFFIXES = (".npy", ".npz")


class CliError(HPError, ValueError):
    """A user error of the command line: one line, naming the offending file or option."""


# ---- audio ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AudioInfo:
    path: str
    samples: int  # at 16 kHz, after resampling


def probe_audio(path: str, min_samples: int) -> AudioInfo:
    """Length of `path` at 16 kHz from its header; errors (one line, naming the file) if it cannot be read, is
    empty or shorter than `min_samples`."""
    try:
        with sf.SoundFile(path) as f:
            frames, rate = f.frames, f.samplerate
    except (sf.SoundFileError, OSError) as e:
        raise CliError(audio.unreadable(path, e)) from None
    samples = -(-frames * SAMPLE_RATE // rate)  # as resample() returns
    _check_length(path, samples, min_samples)
    return AudioInfo(path, samples)


def _check_length(path: str, samples: int, min_samples: int) -> None:
    if samples == 0:
        raise CliError(f"{path}: no audio samples")
    if samples < min_samples:
        raise CliError(f"{path}: {samples / SAMPLE_RATE:.3f} s of audio; at least {min_samples / SAMPLE_RATE:g} s "
                       "needed")


def read_audio(path: str, min_samples: int = 0) -> np.ndarray:
    """`path` read as user input (hp.data.audio.read_audio: any rate, channels averaged), checked for length."""
    mono = audio.read_audio(path, user_input=True)
    _check_length(path, len(mono), min_samples)
    return mono


# ---- the model ----------------------------------------------------------------------------------------------
def receptive_field(config) -> int:
    """Samples the CNN needs for one output frame (400 for WavLM's 25 ms window)."""
    field = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        field = (field - 1) * stride + kernel
    return field


def load_bundle(directory: str | None, task: str | None, verb: str):
    """The bundle in `directory` (None: the default of `task`), checked to be of `task` (None: either)."""
    directory = directory or DEFAULT_MODELS[task or "sv"]
    from safetensors import SafetensorError

    from hp.deploy.export import Bundle
    from hp.deploy.release import resolve

    try:
        bundle = Bundle.load(resolve(directory))
    except HPError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"{directory}: cannot load the model bundle ({type(e).__name__}: {e})") from None
    if task is not None and bundle.task != task:
        kinds = {"sv": "an SV bundle (speaker verification)", "cm": "a CM bundle (anti-spoofing)"}
        raise CliError(f"{directory}: {verb} needs {kinds[task]}; this is {kinds[bundle.task]}")
    return bundle


def make_runner(bundle, runtime: str, threads: int | None):
    if runtime in ("onnx", "int8"):
        if importlib.util.find_spec("onnxruntime") is None:
            raise CliError("--runtime onnx: onnxruntime is not installed (pip install onnxruntime, or use "
                           "--runtime torch)")
    return bundle.runner(runtime, threads)


@dataclass
class Outputs:
    """The model's outputs for the files that could be read, in input order, and why the others could not."""
    paths: list[str]  # the files read, in input order
    rows: list[int]  # their positions among the inputs
    values: dict[str, np.ndarray]  # output name -> [len(paths), ...]
    skipped: list[str]  # one line per file that could not be used, naming it


def run(runner, infos: list[AudioInfo], min_samples: int, batch_seconds: float
        ) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """The runner's outputs for every file, in input order: files are decoded a batch at a time, in batches of
    similar length (hp.evaluation.scoring.length_batches), zero-padded (the model's outputs do not depend on the
    padding). A file whose header was fine but whose audio cannot be decoded is left out: (outputs, {index: why})."""
    outputs: dict[str, np.ndarray] = {}
    failed: dict[int, str] = {}
    durations = np.array([info.samples for info in infos]) / SAMPLE_RATE
    for rows in length_batches(durations, batch_seconds):
        waves, read = [], []
        for i in rows:
            try:
                waves.append(read_audio(infos[i].path, min_samples))
                read.append(int(i))
            except HPError as e:
                failed[int(i)] = one_line(e)
        if not read:
            continue
        batch, lengths = pad_batch(waves)
        for name, value in runner(batch.numpy(), lengths.numpy()).items():
            if name not in outputs:
                outputs[name] = np.full((len(infos), *value.shape[1:]), np.nan, dtype=value.dtype)
            outputs[name][read] = value
    return outputs, failed


def model_outputs(args, bundle, paths: list[str], every: bool = False) -> Outputs:
    """Check every input, then run the model on those that can be used: a file that is missing, unreadable or too
    short is skipped and named in `skipped` (`every`: all must be usable, else the first that is not is the error);
    when no file is left, that is an error."""
    min_samples = max(round(MIN_SECONDS * SAMPLE_RATE), receptive_field(bundle.graph.model.frontend.config))
    infos, rows, skipped = [], [], {}
    for i, p in enumerate(paths):  # every file is checked before any model work
        try:
            infos.append(probe_audio(p, min_samples))
            rows.append(i)
        except HPError as e:
            if every:
                raise
            skipped[i] = one_line(e)
    values, failed = ({}, {}) if not infos else run(
        make_runner(bundle, "int8" if args.int8 else args.runtime, args.threads), infos, min_samples,
        args.batch_seconds)
    if every and failed:
        raise CliError(next(iter(failed.values())))
    skipped.update({rows[k]: why for k, why in failed.items()})
    kept = [k for k in range(len(rows)) if k not in failed]
    if not kept:
        raise CliError("no input could be used: " + "; ".join(skipped[i] for i in sorted(skipped)))
    return Outputs([paths[rows[k]] for k in kept], [rows[k] for k in kept],
                   {name: value[kept] for name, value in values.items()}, [skipped[i] for i in sorted(skipped)])


def report_skipped(outputs: Outputs) -> int:
    """One stderr line per input left out; the exit status: 1 when any was, else 0."""
    for why in outputs.skipped:
        print(f"{PROG}: skipped {why}", file=sys.stderr)
    return 1 if outputs.skipped else 0


def threshold_of(bundle, given: float | None) -> float:
    if given is not None:
        return given
    value = bundle.scoring.get("threshold")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise CheckpointError(f"{bundle.directory / 'scoring.json'}: no numeric threshold ({value!r}); "
                              "pass --threshold")
    return float(value)


def _fmt(x: float) -> str:
    return f"{x:.7g}"


def _tsv_safe(path: str) -> str:
    if any(c in path for c in "\t\n\r"):
        raise CliError(f"{path!r}: a tab or line break in a file name cannot be written as TSV; rename the file")
    return path


# ---- verbs ---------------------------------------------------------------------------------------------------
def cmd_embed(args) -> int:
    out = args.out
    if out is not None:
        _check_out(out)
        if Path(out).suffix.lower() not in EMBED_SUFFIXES:
            raise CliError(f"{out}: --out must end in .npy (an array [files, dim]) or .npz (arrays paths and "
                           "embeddings)")
    else:
        for p in args.wav:
            _tsv_safe(p)
    bundle = load_bundle(args.model, None, "embed")
    result = model_outputs(args, bundle, args.wav)
    embeddings = result.values["embeddings"].astype(np.float32)
    if out is None:
        sys.stdout.write("".join(f"{p}\t{' '.join(map(_fmt, e))}\n" for p, e in zip(result.paths, embeddings)))
        return report_skipped(result)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:  # a file object: numpy would append a suffix to tmp
        if Path(out).suffix.lower() == ".npy":  # no paths in the file: row i is input i, NaN where skipped
            rows = np.full((len(args.wav), embeddings.shape[1]), np.nan, dtype=np.float32)
            rows[result.rows] = embeddings
            np.save(f, rows)
        else:
            np.savez(f, paths=np.array(result.paths, dtype=str), embeddings=embeddings)
    return report_skipped(result)


def cmd_verify(args) -> int:
    bundle = load_bundle(args.model, "sv", "verify")
    threshold = threshold_of(bundle, args.threshold)
    mean = mean_of(bundle)
    embeddings = model_outputs(args, bundle, [args.enroll, args.test], every=True).values["embeddings"]
    score = cosine_score(embeddings, mean)
    print(json.dumps({"enroll": args.enroll, "test": args.test, "score": score, "threshold": threshold,
                      "decision": "target" if score >= threshold else "nontarget"}))
    return 0


def mean_of(bundle) -> np.ndarray | None:
    """scoring.json's mean embedding (None: no mean subtraction), checked against the model's embedding size."""
    mean, size = bundle.scoring.get("mean"), bundle.graph.model.head_config.embedding
    if mean is None:
        return None
    try:
        mean = np.asarray(mean, dtype=np.float64)
    except (TypeError, ValueError):
        mean = None
    if mean is None or mean.shape != (size,) or not np.isfinite(mean).all():
        raise CheckpointError(f"{bundle.directory / 'scoring.json'}: mean must be null or {size} finite numbers "
                              "(the embedding size)")
    return mean


def cosine_score(embeddings: np.ndarray, mean: np.ndarray | None) -> float:
    """Cosine of embeddings [2, E] after subtracting `mean` (None: none): the pipeline's cosine score
    (hp.evaluation.score_norm.score_trials before AS-norm)."""
    from hp.evaluation.score_norm import trial_scores

    if mean is not None:
        embeddings = embeddings - mean
    return float(trial_scores(embeddings, np.array([0]), np.array([1]))[0])


def cmd_detect(args) -> int:
    if args.out is not None:
        _check_out(args.out)
    for p in args.wav:
        _tsv_safe(p)
    bundle = load_bundle(args.model, "cm", "detect")
    threshold = threshold_of(bundle, args.threshold)
    result = model_outputs(args, bundle, args.wav)
    llrs = result.values["llrs"].astype(np.float64)
    lines = ["path\tllr\tdecision\n"] + [f"{p}\t{_fmt(llr)}\t{'bonafide' if llr >= threshold else 'spoof'}\n"
                                         for p, llr in zip(result.paths, llrs)]
    if args.out is None:
        sys.stdout.write("".join(lines))
    else:
        with atomic_path(args.out) as tmp:
            tmp.write_text("".join(lines))
    return report_skipped(result)


def _check_out(out: str) -> None:
    if os.path.isdir(out):
        raise CliError(f"{out}: --out is a directory; name a file")


# ---- argument parsing -------------------------------------------------------------------------------------------
def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return parse


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


class _Formatter(argparse.HelpFormatter):
    """Wraps each paragraph of a description on its own; an epilog's lines stay as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return text
        return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=indent,
                                          subsequent_indent=indent) for p in text.split("\n\n"))


def _add_common(parser: argparse.ArgumentParser, task: str | None) -> None:
    group = parser.add_argument_group("model and runtime")
    default = (f"default {DEFAULT_MODELS[task]}" if task else
               f"default {DEFAULT_MODELS['sv']} (any bundle: a CM one gives its embeddings)")
    group.add_argument("--model", metavar="DIR",
                       help="a released model folder written by the pipeline's export stage (its files are checked "
                            "against its SHA256SUMS first), one of its ONNX files (model.onnx, model.int8.onnx: "
                            "that graph is run), or a Hugging Face hub id (owner/name) of a folder where the hub "
                            f"is reachable; {default}")
    group.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                       help="run the PyTorch model or its fp32 ONNX graph (onnxruntime, CPU); default torch")
    group.add_argument("--int8", action="store_true",
                       help="run the int8 ONNX graph (model.int8.onnx, onnxruntime, CPU): smaller and faster, "
                            "scores within the test-set interval the model card gives")
    group.add_argument("--threads", type=_positive(int), metavar="N",
                       help="CPU threads (torch.set_num_threads; onnxruntime's intra-op threads); default: the "
                            "libraries' own choice")
    group.add_argument("--batch-seconds", type=_positive(float), default=60.0, metavar="S",
                       help="files are run in batches of similar length holding about S seconds of padded "
                            "audio; default 60 (results do not depend on it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_Formatter,
        description="Speaker embeddings, speaker verification and spoofing detection with a pruned WavLM "
                    "exported by the pipeline (dvc repro writes models/sv/export and models/cm/export).\n\n"
                    "Audio: any file soundfile reads (WAV, FLAC, OGG, ...), of any sample rate (resampled to "
                    "16 kHz) and any number of channels (averaged), at least 0.1 s long.\n\n"
                    "Of several files, one that cannot be used (missing, unreadable, too short) is skipped with "
                    "one stderr line naming it, the others are written, and the exit status is 1. Other errors "
                    "(no usable file, the wrong bundle) print one line naming the file and exit with status 2; no "
                    "output file is written then.",
        epilog="examples:\n"
               f"  {PROG} embed a.wav b.flac --out embeddings.npz\n"
               f"  {PROG} verify enroll.wav test.wav\n"
               f"  {PROG} detect *.flac --out cm.tsv --runtime onnx\n"
               f"  {PROG} <command> --help")
    verbs = parser.add_subparsers(dest="command", metavar="command", required=True)

    embed = verbs.add_parser(
        "embed", formatter_class=_Formatter, help="speaker (or CM) embeddings of audio files",
        description="Embeddings of audio files: the bundle's `embeddings` output (SV: the speaker embedding "
                    "trials are scored with; a CM bundle gives its own). Without --out, one line per file on "
                    "stdout: path, a tab, the values separated by spaces (7 significant digits).")
    _add_common(embed, None)
    embed.add_argument("wav", nargs="+", metavar="WAV", help="audio files")
    embed.add_argument("--out", metavar="FILE",
                       help="write a .npy file (float32 [files, dim], in input order; NaN rows for skipped "
                            "files) or a .npz file (arrays `paths` and `embeddings` of the files read) instead of "
                            "printing")
    embed.set_defaults(func=cmd_embed)

    verify = verbs.add_parser(
        "verify", formatter_class=_Formatter,
        help="do two recordings hold the same speaker? (SV bundle)",
        description="Score one speaker-verification trial as the pipeline's cosine scores are made: subtract "
                    "the training mean embedding (scoring.json `mean`, when not null) from both embeddings, "
                    "take their cosine. Prints one JSON line: enroll, test, score, threshold, decision "
                    "(`target` if score >= threshold, else `nontarget`).")
    _add_common(verify, "sv")
    verify.add_argument("enroll", metavar="ENROLL", help="the enrollment recording")
    verify.add_argument("test", metavar="TEST", help="the test recording")
    verify.add_argument("--threshold", type=_finite, metavar="X",
                        help="decision threshold on the cosine score; default: scoring.json `threshold`, the "
                             "equal-error-rate threshold of the pipeline's cosine scores on its test list "
                             "(`threshold_rule` says which)")
    verify.set_defaults(func=cmd_verify)

    detect = verbs.add_parser(
        "detect", formatter_class=_Formatter, help="bona fide or spoofed speech? (CM bundle)",
        description="Spoofing detection: the calibrated log-likelihood ratio of each file (natural log; "
                    "positive favours bona fide speech) and a decision (`bonafide` if llr >= threshold, else "
                    "`spoof`), as TSV with the header path, llr, decision.")
    _add_common(detect, "cm")
    detect.add_argument("wav", nargs="+", metavar="WAV", help="audio files")
    detect.add_argument("--out", metavar="FILE", help="write the TSV to FILE instead of stdout")
    detect.add_argument("--threshold", type=_finite, metavar="X",
                        help="decision threshold on the LLR; default: scoring.json `threshold`, the Bayes "
                             "threshold of the ASVspoof5 detection cost function (`threshold_rule` says so)")
    detect.set_defaults(func=cmd_detect)
    return parser


def pick_graph(args) -> None:
    """`--model <folder>/model.int8.onnx` (or model.onnx): that folder, run on that graph, as --int8 (or
    --runtime onnx) would."""
    from hp.deploy.release import FP32, INT8

    if args.model is None or not Path(args.model).is_file():
        return
    name = Path(args.model).name
    if name not in (FP32, INT8):
        raise CliError(f"{args.model}: --model takes a release folder, or its {FP32} or {INT8}")
    args.model = str(Path(args.model).parent)
    if name == INT8:
        args.int8 = True
    else:
        args.runtime = "onnx"


def main(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), argparse's message already printed
        return e.code if isinstance(e.code, int) else 2
    import torch

    threads = torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        pick_graph(args)
        return args.func(args)
    except HPError as e:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(f"{PROG}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head: the reader has gone, not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        torch.set_num_threads(threads)
