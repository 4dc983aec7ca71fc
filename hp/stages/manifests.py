"""manifests@<task>: validated Parquet manifests of every split (SV: and the trial lists; MUSAN/RIR lists)."""
from __future__ import annotations

from pathlib import Path

from hp.data import asvspoof, voxceleb
from hp.data.augment import musan_table, rir_table
from hp.data.interop import write_kaldi_dir
from hp.data.manifest import Validation, write_parquet
from hp.params import flag, section
from hp.utils.files import write_json


def manifests(task: str, params: dict, corpus: Path, out: Path) -> dict:
    """Parquet manifests of every split (SV: and the trial lists, MUSAN/RIR lists), validated against the audio."""
    cfg = section(params, "manifests")
    validation = Validation(min_seconds=float(cfg["min_seconds"]),
                            drop_invalid=flag(cfg["drop_invalid"], "manifests.drop_invalid"))
    if task == "sv":
        source = voxceleb.SVSource.read(corpus / "corpus.json")
        tables = voxceleb.sv_tables(source, validation)
    else:
        source = asvspoof.CMSource.read(corpus / "corpus.json")
        tables = asvspoof.cm_tables(source, validation)
    if source.musan_dir is not None:
        tables["musan"] = musan_table(source.musan_dir)
    if source.rirs_dir is not None:
        tables["rirs"] = rir_table(source.rirs_dir)
    for name, table in tables.items():
        write_parquet(table, out / f"{name}.parquet")
        if task == "sv" and name in ("train", "test"):  # the same lists for Kaldi/WeSpeaker SV recipes
            write_kaldi_dir(table, out / "kaldi" / name)
    summary = {name: len(t) for name, t in tables.items()}
    if task == "sv":
        summary["trials_per_list"] = tables["trials"]["list"].value_counts(sort=False).to_dict()
    summary["dropped"] = [{"path": p, "reason": r} for p, r in validation.dropped]
    write_json(out / "summary.json", summary)
    return summary
