"""Where a corpus is on disk: the record the prepare stage writes as corpus.json and the manifests stage reads.

Both tasks' records (hp.data.voxceleb.SVSource, hp.data.asvspoof.CMSource) are frozen dataclasses whose
fields ending in `_dir` are paths: relative ones are relative to corpus.json, so the built-in mini corpus can
move with its directory, while a user's trees are written absolute.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from hp.data.manifest import DataError
from hp.utils.files import read_json, write_json

AUGMENTATION_DIRS = ("musan_dir", "rirs_dir")


class CorpusSource:
    """Mixin for such a dataclass: path resolution, the augmentation corpora's check, corpus.json I/O."""

    def resolved(self, base: Path):
        """The same record with every directory joined to `base` (a relative base keeps relative paths)."""
        return dataclasses.replace(self, **{
            f.name: None if getattr(self, f.name) is None else os.path.normpath(Path(base) / getattr(self, f.name))
            for f in dataclasses.fields(self) if f.name.endswith("_dir")})

    def check_augmentation_dirs(self) -> None:
        for key in AUGMENTATION_DIRS:
            if getattr(self, key) is not None and not Path(getattr(self, key)).is_dir():
                raise DataError(f"{getattr(self, key)}: {key} is not a directory")

    def write(self, path: Path) -> None:
        write_json(path, {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()})

    @classmethod
    def read(cls, path: Path):
        """corpus.json, with relative paths resolved against its directory."""
        meta = read_json(path, DataError)
        try:
            source = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.items()})
            return source.resolved(Path(path).parent)
        except (AttributeError, TypeError, ValueError) as e:
            raise DataError(f"{path}: malformed ({type(e).__name__}: {e})") from None
