"""manifests@<task>: validated Parquet manifests of every split (SV: and the trial lists; MUSAN/RIR lists)."""
from __future__ import annotations

from pathlib import Path

from hp.data.augment import musan_table, rir_table
from hp.data.manifest import Validation, write_parquet
from hp.params import ManifestsConfig, section, typed
from hp.tasks import get_task
from hp.utils.files import write_json
from hp.utils.timing import timed


def check(task: str, params: dict) -> ManifestsConfig:
    """The manifests group, checked before any work."""
    return typed(ManifestsConfig, section(params, "manifests"), "manifests")


def manifests(task: str, params: dict, corpus: Path, out: Path) -> dict:
    """Parquet manifests of every split (and the task's extras: SV's trial lists and Kaldi directories), MUSAN/RIR
    lists, validated against the audio; summary.json counts them, lists what was dropped and, per official list,
    how many of its entries were kept."""
    cfg = check(task, params)
    validation = Validation(min_seconds=cfg.min_seconds, drop_invalid=cfg.drop_invalid,
                            decode=cfg.check_audio == "decode")
    spec = get_task(task)
    source, tables = spec.manifest_tables(corpus, validation)
    if source.musan_dir is not None:
        tables["musan"] = musan_table(source.musan_dir)
    if source.rirs_dir is not None:
        tables["rirs"] = rir_table(source.rirs_dir)
    with timed("write manifests"):
        for name, table in tables.items():
            write_parquet(table, out / f"{name}.parquet")
    summary = {name: len(t) for name, t in tables.items()}
    with timed("write extras"):
        spec.write_manifest_extras(tables, out, summary)
    summary["dropped"] = [{"path": p, "reason": r} for p, r in validation.dropped]
    summary["kept"] = validation.kept  # per official list (SV trial list, CM protocol): listed and kept
    write_json(out / "summary.json", summary)
    return summary
