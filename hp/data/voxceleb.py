"""VoxCeleb as distributed -> SV manifests: training trees, trial lists O/E/H and the test utterances they name.

The prepare stage resolves where everything is into one `corpus.json` (the built-in mini corpus is written in
the same layout, so both go through this module):

    <voxceleb1_dir>/wav/idXXXXX/<youtube_id>/NNNNN.wav      VoxCeleb1 dev + test (both zips unpack to wav/)
    <voxceleb1_dir>/{veri_test2,list_test_all2,list_test_hard2}.txt   the cleaned trial lists O, E, H
    <voxceleb2_dir>/wav/idXXXXX/<youtube_id>/NNNNN.wav      VoxCeleb2 dev, converted from aac/ by
                                                            `python -m hp.data.convert <dir>/aac <dir>/wav`
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hp.data.manifest import COLUMNS, DataError, Validation, read_trials
from hp.data.source import CorpusSource
from hp.errors import ConfigError
from hp.utils.timing import timed

TRIAL_LISTS = {"O": "veri_test2.txt", "E": "list_test_all2.txt", "H": "list_test_hard2.txt"}
TRIAL_NAMES = {"O": "Vox1-O", "E": "Vox1-E", "H": "Vox1-H"}  # as papers name them
TRAIN_SETS = ("voxceleb1", "voxceleb2")


@dataclass(frozen=True)
class SVSource(CorpusSource):
    """Where the SV data lives and which parts are used; relative paths are relative to corpus.json."""

    voxceleb1_dir: str
    voxceleb2_dir: str | None
    trials: tuple[str, ...] = ("O",)
    train_on: tuple[str, ...] = ("voxceleb2",)
    musan_dir: str | None = None
    rirs_dir: str | None = None

    def check(self, where: str) -> None:
        """Fail early, naming the params key, on choices that cannot work (before any audio is read)."""
        if not self.trials or set(self.trials) - set(TRIAL_LISTS):
            raise ConfigError(f"params.yaml: {where}.trials must be a non-empty subset of {list(TRIAL_LISTS)}, "
                              f"got {list(self.trials)}")
        if not self.train_on or set(self.train_on) - set(TRAIN_SETS):
            raise ConfigError(f"params.yaml: {where}.train_on must be a non-empty subset of {list(TRAIN_SETS)}, "
                              f"got {list(self.train_on)}")
        if "voxceleb1" in self.train_on and set(self.trials) & {"E", "H"}:
            # E and H draw their trials from all 1,251 VoxCeleb1 speakers: none may be seen in training
            raise ConfigError(f"params.yaml: {where}.train_on includes voxceleb1, which the E and H trial lists "
                              "test on; train on voxceleb2 only, or score trials [O]")

    def check_paths(self) -> None:
        """Every directory and trial list exists; VoxCeleb2 left in m4a gets the conversion command."""
        for name in ("voxceleb1", "voxceleb2"):
            root = getattr(self, f"{name}_dir")
            if root is None or (name == "voxceleb2" and name not in self.train_on):
                continue
            if not (Path(root) / "wav").is_dir():
                hint = ""
                if (Path(root) / "aac").is_dir():
                    hint = f"; convert the m4a files first: python -m hp.data.convert {root}/aac {root}/wav"
                raise DataError(f"{root}: no wav/ directory (expected wav/idXXXXX/<video>/NNNNN.wav){hint}")
        for name in self.trials:
            path = Path(self.voxceleb1_dir) / TRIAL_LISTS[name]
            if not path.is_file():
                raise DataError(f"{path}: trial list {name} not found (download it beside VoxCeleb1's wav/)")
        self.check_augmentation_dirs()


def voxceleb_tree(wav_dir: Path, split: str, validation: Validation) -> pd.DataFrame:
    """`<wav_dir>/<speaker>/<video>/<NNNNN>.wav` (VoxCeleb1/2 as wav); utt ids are the relative paths."""
    wav_dir = Path(wav_dir)
    with timed(f"list {split} files"):
        utts = ["/".join(parts) for parts in sorted(_wav_files(wav_dir))]
        if not utts:
            raise DataError(f"{wav_dir}: no <speaker>/<video>/<utt>.wav files")
        root = str(wav_dir)
    with timed(f"check {split} audio", len(utts)):
        return validation.check(_table(utts, [f"{root}/{u}" for u in utts], split), root)


def _wav_files(wav_dir: Path):
    """(speaker, video, file) of each `<speaker>/<video>/<file>.wav`, as glob("*/*/*.wav") finds them; sorted,
    these tuples order as the Paths do (part by part). os.scandir: a million Paths cost ~20 s, these ~2 s."""
    for speaker in _subdirectories(wav_dir):
        for video in _subdirectories(speaker.path):
            with os.scandir(video.path) as files:
                yield from ((speaker.name, video.name, f.name) for f in files if f.name.endswith(".wav"))


def _subdirectories(path) -> list[os.DirEntry]:
    with os.scandir(path) as entries:
        return [e for e in entries if e.is_dir()]


def _table(utts: list[str], paths: list[str], split: str) -> pd.DataFrame:
    speakers = [u.split("/", 1)[0] for u in utts]
    return pd.DataFrame({"utt": utts, "path": paths, "speaker": speakers, "label": speakers,
                         "duration_s": 0.0, "sample_rate": 0, "split": split})[COLUMNS]


def check_converted(root: Path) -> None:
    """Beside aac/, wav/ must hold every file converted: a stopped conversion leaves a silent subset."""
    aac, wav = root / "aac", root / "wav"
    if not aac.is_dir():
        return
    expected = {f.relative_to(aac).with_suffix(".wav").as_posix() for f in aac.glob("*/*/*.m4a")}
    missing = expected - {f.relative_to(wav).as_posix() for f in wav.glob("*/*/*.wav")}
    if missing:
        raise DataError(f"{wav}: {len(missing)} of the {len(expected)} files under {aac} are not converted "
                        f"(e.g. {min(missing)}); finish with: python -m hp.data.convert {aac} {wav}")


def trial_lists(source: SVSource) -> dict[str, pd.DataFrame]:
    """The chosen trial lists, strictly parsed; a trial naming a missing file fails with file and line."""
    wav_dir = Path(source.voxceleb1_dir) / "wav"
    lists, exists = {}, {}
    for name in source.trials:
        path = Path(source.voxceleb1_dir) / TRIAL_LISTS[name]
        trials = read_trials(path)
        for column in ("enroll", "test"):
            for utt in trials[column].unique():
                if utt not in exists:
                    exists[utt] = (wav_dir / utt).is_file()
            missing = ~trials[column].map(exists)
            if missing.any():
                first = trials[missing].iloc[0]
                raise DataError(f"{path}:{first['line']}: {first[column]} not found under {wav_dir}")
        lists[name] = trials.drop(columns="line")
    return lists


def sv_tables(source: SVSource, validation: Validation) -> dict[str, pd.DataFrame]:
    """train, test (every utterance the trial lists name) and trials (with a `list` column: O, E or H)."""
    source.check_paths()
    with timed("trial lists"):
        lists = trial_lists(source)
        trials = pd.concat([t.assign(list=name) for name, t in lists.items()], ignore_index=True)
        test_utts = sorted(set(trials["enroll"]) | set(trials["test"]))
    vox1_wav = Path(source.voxceleb1_dir) / "wav"
    with timed("check test audio", len(test_utts)):
        test = validation.check(_table(test_utts, [str(vox1_wav / u) for u in test_utts], "test"), str(vox1_wav))
    # with drop_invalid, trials whose audio was dropped cannot be scored
    known = set(test["utt"])
    scorable = trials["enroll"].isin(known) & trials["test"].isin(known)
    for name, kept in scorable.groupby(trials["list"], sort=False).agg(["size", "sum"]).iterrows():
        validation.count(f"trials {name}", int(kept["size"]), int(kept["sum"]))
    trials = trials[scorable].reset_index(drop=True)
    tested = set(test["speaker"])
    parts = []
    if "voxceleb2" in source.train_on:
        check_converted(Path(source.voxceleb2_dir))
        parts.append(voxceleb_tree(Path(source.voxceleb2_dir) / "wav", "train", validation))
    if "voxceleb1" in source.train_on:  # its dev part: every speaker the trial lists do not test
        vox1 = voxceleb_tree(vox1_wav, "train", validation)
        parts.append(vox1[~vox1["speaker"].isin(tested)])
    train = pd.concat(parts, ignore_index=True)
    overlap = sorted(set(train["speaker"]) & tested)
    if overlap:
        raise DataError(f"{len(overlap)} speaker(s) both in training and in the trial lists, e.g. {overlap[0]}: "
                        "a VoxCeleb2 tree must not hold VoxCeleb1 speakers")
    return {"train": train, "test": test, "trials": trials[["list", "label", "enroll", "test"]]}

