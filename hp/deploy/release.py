"""A released model folder as a user downloads it: checksums, and the ONNX path that needs only numpy and onnxruntime.

This module imports neither torch nor anything of hp that does, so that `OnnxModel.open(folder)` runs where only
`pip install onnxruntime numpy` was done (tests/unit/test_release.py checks it in a process that cannot import torch).

The folder (hp.deploy.export.Bundle.write) holds SHA256SUMS, in the format `sha256sum -c` reads: one line
"<hex digest>  <file name>" per file. Every loader checks it first, so a file changed after export (by hand, by a
broken download, by someone else) is refused with one line naming it, before anything is run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from hp.errors import CheckpointError

MANIFEST = "SHA256SUMS"
FP32, INT8 = "model.onnx", "model.int8.onnx"
_LINE = re.compile(r"([0-9a-f]{64}) [ *](\S+)")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path) -> None:
    """SHA256SUMS over every other file of `directory` (a flat folder), sorted by name."""
    directory = Path(directory)
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST)
    (directory / MANIFEST).write_text("".join(f"{sha256(directory / n)}  {n}\n" for n in names))


def verify(directory: Path) -> list[str]:
    """Check every file SHA256SUMS lists; returns their names. One-line CheckpointError for a missing manifest, a
    malformed line, a missing file or a digest that differs (the file was changed after export)."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{manifest}: missing; a released model folder lists its files' checksums there "
                              "(re-export it: dvc repro export)")
    names = []
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        match = _LINE.fullmatch(line.strip())
        if match is None or "/" in match[2] or match[2] in (".", ".."):
            raise CheckpointError(f"{manifest}:{number}: not '<sha256>  <file name>': {line[:80]!r}")
        digest, name = match.groups()
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: listed in {MANIFEST} but missing")
        if sha256(directory / name) != digest:
            raise CheckpointError(f"{directory / name}: checksum differs from {MANIFEST}'s (changed or corrupt "
                                  "since export); re-download or re-export the model")
        names.append(name)
    return names


def resolve(model: str) -> Path:
    """A model folder from a local path or, where the Hugging Face hub is reachable, a hub id (owner/name), which
    is downloaded to the hub's cache. A path that exists wins over a hub id spelt the same."""
    path = Path(model).expanduser()
    if path.exists() or not _HUB_ID.fullmatch(model):
        if not path.is_dir():
            raise CheckpointError(f"{model}: no such model folder (a released model: models/<task>/export, or a "
                                  "hub id owner/name)")
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{model}: not a folder here, and huggingface_hub (pip install huggingface_hub) is "
                              "needed to fetch it from the hub") from None
    try:
        return Path(snapshot_download(model))
    except Exception as e:  # the hub client raises many types (offline, not found, gated, HTTP)
        raise CheckpointError(f"{model}: not a folder here, and the hub did not give it ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no message'})") from None


class OnnxModel:
    """An onnxruntime CPU session over an ONNX graph of hp's export. Inputs: wave [batch, samples] float32 (16 kHz
    mono, zero-padded) and lengths [batch] int64; outputs by name (the task's: embeddings; CM also scores, llrs)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's business
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types, one per failure
            raise CheckpointError(f"{path}: not a loadable ONNX model ({type(e).__name__}: {e})") from None
        self.outputs = [o.name for o in self.session.get_outputs()]

    @classmethod
    def open(cls, folder: str | os.PathLike, int8: bool = False, threads: int | None = None
             ) -> tuple[OnnxModel, dict]:
        """The fp32 (or int8) graph of a released folder and its scoring.json, after checking SHA256SUMS."""
        folder = resolve(str(folder))
        listed = verify(folder)
        name = INT8 if int8 else FP32
        for needed in (name, "scoring.json"):
            if needed not in listed:
                raise CheckpointError(f"{folder / needed}: not in the folder's {MANIFEST} (an export without it?)")
        try:
            scoring = json.loads((folder / "scoring.json").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{folder / 'scoring.json'}: unreadable ({e})") from None
        return cls(folder / name, threads), scoring

    def run(self, wave: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(None, {"wave": np.ascontiguousarray(wave, dtype=np.float32),
                                         "lengths": np.ascontiguousarray(lengths, dtype=np.int64)})
        return dict(zip(self.outputs, values))
