"""prepare@<task>: the built-in mini corpus written, or a released corpus checked; corpus.json says where."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from hp.data import asvspoof, synth, voxceleb
from hp.data.source import AUGMENTATION_DIRS
from hp.errors import ConfigError
from hp.params import section, typed
from hp.utils.files import atomic_dir


def prepare(task: str, params: dict, out: Path) -> dict:
    """Write the built-in mini corpus under `out`, or check a released corpus; either way `out/corpus.json`
    says where the data is, and the manifests stage reads only that."""
    cfg = dict(section(params, f"prepare.{task}"))
    return _prepare_sv(cfg, out) if task == "sv" else _prepare_cm(cfg, out)


def _synthesise(writer, out: Path, cfg: dict, where: str) -> dict:
    """Write a mini corpus; an unknown key or an out-of-range value is named by its params.yaml group."""
    try:
        return writer(out, **cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"params.yaml: {where}: {e}") from None


def _prepare_sv(cfg: dict, out: Path) -> dict:
    """mini: synthesise the corpus in VoxCeleb's layout; voxceleb: check the trees."""
    corpus, mini = cfg.pop("corpus"), cfg.pop("mini", None)
    for key in ("trials", "train_on"):
        if not isinstance(cfg.get(key), list):
            raise ConfigError(f"params.yaml: prepare.sv.{key} must be a list, got {cfg.get(key)!r}")
        cfg[key] = tuple(cfg[key])
    source = typed(voxceleb.SVSource, cfg, "prepare.sv")
    source.check("prepare.sv")
    here = Path.cwd()
    if corpus == "voxceleb":
        if source.voxceleb1_dir is None:
            raise ConfigError("params.yaml: prepare.sv.voxceleb1_dir is null; corpus voxceleb needs it")
        if "voxceleb2" in source.train_on and source.voxceleb2_dir is None:
            raise ConfigError("params.yaml: prepare.sv.voxceleb2_dir is null but train_on includes voxceleb2")
        source = source.resolved(here)
        source.check_paths()
        with atomic_dir(out) as tmp:
            source.write(tmp / "corpus.json")
        return {"corpus": corpus, **asdict(source)}
    if corpus != "mini":
        raise ConfigError(f"params.yaml: prepare.sv.corpus must be 'mini' or 'voxceleb', got {corpus!r}")
    for key in ("voxceleb1_dir", "voxceleb2_dir"):  # a set path would be ignored: say so instead
        if getattr(source, key) is not None:
            raise ConfigError(f"params.yaml: prepare.sv.{key} is set but corpus is 'mini'; set corpus: voxceleb")
    if source.trials != ("O",) or source.train_on != ("voxceleb2",):
        raise ConfigError("params.yaml: the mini corpus has one trial list (O) and one training set (voxceleb2); "
                          "set prepare.sv.trials: [O] and train_on: [voxceleb2]")
    if not isinstance(mini, dict):
        raise ConfigError("params.yaml: prepare.sv.mini must be a mapping of the mini corpus's settings")
    summary = _synthesise(synth.write_sv_corpus, out, mini, "prepare.sv.mini")
    # MUSAN / RIRS_NOISES as given (made absolute); the corpus itself relative to corpus.json
    source = replace(source.resolved(here), voxceleb1_dir=synth.SV_DIRS["test"], voxceleb2_dir=synth.SV_DIRS["train"])
    source.write(out / "corpus.json")
    return summary


def _prepare_cm(cfg: dict, out: Path) -> dict:
    """mini: synthesise the corpus in ASVspoof5's layout; asvspoof5 / asvspoof2019la: check the tree (only the
    chosen corpus's directory is read, so both may be set)."""
    corpus, mini = cfg.pop("corpus", None), cfg.pop("mini", None)
    if corpus != "mini" and corpus not in asvspoof.FORMATS:
        raise ConfigError(f"params.yaml: prepare.cm.corpus must be one of {['mini', *asvspoof.FORMATS]}, "
                          f"got {corpus!r}")
    dirs = {key: cfg.pop(key, None) for key in asvspoof.CORPUS_DIRS.values()}
    unknown = sorted(set(cfg) - set(AUGMENTATION_DIRS))
    if unknown:  # corpus_dir included: it is written from the corpus's own key
        raise ConfigError(f"params.yaml: unknown key prepare.cm.{unknown[0]}")
    source = typed(asvspoof.CMSource, {"corpus": "asvspoof5", "corpus_dir": ".", **cfg}, "prepare.cm")
    here = Path.cwd()
    if corpus != "mini":
        key = asvspoof.CORPUS_DIRS[corpus]
        if dirs[key] is None:
            raise ConfigError(f"params.yaml: prepare.cm.{key} is null; corpus {corpus} needs it")
        source = replace(source, corpus=corpus, corpus_dir=dirs[key]).resolved(here)
        source.check_paths()
        with atomic_dir(out) as tmp:
            source.write(tmp / "corpus.json")
        return asdict(source)
    if not isinstance(mini, dict):
        raise ConfigError("params.yaml: prepare.cm.mini must be a mapping of the mini corpus's settings")
    summary = _synthesise(synth.write_cm_corpus, out, mini, "prepare.cm.mini")
    replace(source.resolved(here), corpus_dir=".").write(out / "corpus.json")  # the corpus beside corpus.json
    return summary
