"""VoxCeleb2-dev as distributed (m4a/AAC) -> the 16 kHz mono PCM16 wav tree the pipeline reads, with ffmpeg.

    python -m hp.data.convert /data/voxceleb2/dev/aac /data/voxceleb2/dev/wav --jobs 16

then set prepare.sv.voxceleb2_dir to /data/voxceleb2/dev (the pipeline reads `<voxceleb2_dir>/wav`).

`<aac_dir>/idXXXXX/<youtube_id>/NNNNN.m4a` becomes `<wav_dir>/idXXXXX/<youtube_id>/NNNNN.wav`, one ffmpeg
process per file (`--jobs` at a time). Each file is written under a hidden temporary name in its destination
directory and renamed when ffmpeg succeeds, so a killed run never leaves a half-written .wav under its final
name; rerunning the same command skips the files already converted and redoes the rest (overwriting any temp
file left behind). Do not run two conversions into the same wav_dir at once.

A file ffmpeg cannot convert is reported (up to 5 on stderr, one line each) and skipped; the others are still
converted, and the command exits 1. A JSON summary goes to stdout: {"converted", "skipped", "failed",
"seconds"}. Exit code 2: a usage error (ffmpeg not found, no m4a files under aac_dir).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from hp.data.manifest import DataError
from hp.errors import HPError

NAME = "hp.data.convert"  # prefix of every stderr line
SAMPLE_RATE = 16_000
FFMPEG_MISSING = ("ffmpeg not found on PATH; install it (apt install ffmpeg, conda install -c conda-forge ffmpeg) "
                  "or pass --ffmpeg /path/to/ffmpeg")
SHOWN_FAILURES = 5


def find_ffmpeg(ffmpeg: str | os.PathLike | None = None) -> str:
    """The ffmpeg executable: `ffmpeg` as given (a path or a name on PATH), else `ffmpeg` on PATH."""
    if ffmpeg is None:
        found = shutil.which("ffmpeg")
        if found is None:
            raise DataError(FFMPEG_MISSING)
        return found
    found = shutil.which(os.fspath(ffmpeg))
    if found is None:
        raise DataError(f"--ffmpeg {ffmpeg}: not an executable file")
    return found


def find_sources(aac_dir: str | os.PathLike) -> list[Path]:
    """`<aac_dir>/<speaker>/<video>/<utt>.m4a`, sorted; none is an error naming aac_dir."""
    aac_dir = Path(aac_dir)
    hint = "expected VoxCeleb2's dev/aac directory, holding idXXXXX/<youtube_id>/NNNNN.m4a"
    if not aac_dir.is_dir():
        raise DataError(f"{aac_dir}: not a directory ({hint})")
    sources = sorted(aac_dir.glob("*/*/*.m4a"))
    if not sources:
        raise DataError(f"{aac_dir}: no <speaker>/<video>/<utt>.m4a files ({hint})")
    return sources


def temp_path(dst: Path) -> Path:
    """Where `dst` is written before it is renamed into place: hidden, beside it, one fixed name per file."""
    return dst.with_name(f".{dst.name}.tmp")


def ffmpeg_command(ffmpeg: str, src: Path, out: Path) -> list[str]:
    return [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
            "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-f", "wav", str(out)]


def convert_file(ffmpeg: str, src: Path, dst: Path) -> str | None:
    """Convert one file through its temp name; None on success, else a one-line reason (nothing left behind)."""
    tmp = temp_path(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # a stale temp from a killed run: never trusted
        proc = subprocess.run(ffmpeg_command(ffmpeg, src, tmp), stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            return lines[0].strip() if lines else f"ffmpeg exited with code {proc.returncode}"
        os.replace(tmp, dst)
        return None
    except OSError as e:
        return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def convert_tree(aac_dir: str | os.PathLike, wav_dir: str | os.PathLike, jobs: int,
                 ffmpeg: str | os.PathLike | None = None) -> dict:
    """Convert every `<aac_dir>/*/*/*.m4a` to `<wav_dir>/*/*/*.wav` (16 kHz mono PCM16), `jobs` ffmpegs at a time.

    Existing .wav files are skipped. Returns {"converted", "skipped", "failed", "seconds"} counts plus
    "failures": [(source path, ffmpeg's first stderr line)]. Raises DataError when ffmpeg or the m4a files
    cannot be found.
    """
    if jobs < 1:
        raise DataError(f"jobs must be at least 1, got {jobs}")
    start = time.monotonic()
    exe = find_ffmpeg(ffmpeg)
    aac_dir, wav_dir = Path(aac_dir).absolute(), Path(wav_dir).absolute()  # a leading '-' is never an option
    sources = find_sources(aac_dir)
    pending = []
    for src in sources:
        dst = (wav_dir / src.relative_to(aac_dir)).with_suffix(".wav")
        if not dst.exists():
            pending.append((src, dst))
    skipped = len(sources) - len(pending)
    converted, failures = 0, []
    with tqdm(total=len(sources), initial=skipped, unit="file", desc="m4a->wav", disable=None,
              file=sys.stderr) as bar:
        pool = cf.ThreadPoolExecutor(max_workers=jobs)
        try:
            todo, running = iter(pending), {}
            while True:
                while len(running) < 4 * jobs:  # bounded: a million queued futures would not fit well
                    item = next(todo, None)
                    if item is None:
                        break
                    running[pool.submit(convert_file, exe, *item)] = item[0]
                if not running:
                    break
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    src = running.pop(future)
                    error = future.result()
                    if error is None:
                        converted += 1
                    else:
                        failures.append((str(src), error))
                    bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return {"converted": converted, "skipped": skipped, "failed": len(failures),
            "seconds": round(time.monotonic() - start, 2), "failures": sorted(failures)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {NAME}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("aac_dir", help="VoxCeleb2's dev/aac (idXXXXX/<youtube_id>/NNNNN.m4a)")
    parser.add_argument("wav_dir", help="where the wav tree goes (VoxCeleb2's dev/wav)")
    parser.add_argument("--jobs", type=_positive, default=min(8, os.cpu_count() or 1),
                        help="ffmpeg processes at a time (default: min(8, CPUs))")
    parser.add_argument("--ffmpeg", metavar="PATH", help="the ffmpeg executable (default: ffmpeg on PATH)")
    args = parser.parse_args(argv)
    try:
        result = convert_tree(args.aac_dir, args.wav_dir, args.jobs, args.ffmpeg)
    except HPError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the files done so far are complete; the one in flight left no temp behind
        print(f"{NAME}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    failures = result.pop("failures")
    for src, error in failures[:SHOWN_FAILURES]:
        print(f"{NAME}: {src}: {error}", file=sys.stderr)
    if len(failures) > SHOWN_FAILURES:
        print(f"{NAME}: ... and {len(failures) - SHOWN_FAILURES} more file(s) failed", file=sys.stderr)
    print(json.dumps(result))
    return 1 if failures else 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
