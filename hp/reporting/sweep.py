"""The sweep report: every DVC experiment's error against its cost (parameters, measured CPU latency), with the
Pareto fronts, from `dvc exp show --json`.

    dvc exp run --queue -S 'target_sparsity=0,0.3,0.5,0.9' -S sparsity_tolerance=null && dvc queue start
    python -m hp.reporting.sweep                     # reports/sweep/{sweep.md,sweep.html,sweep.csv,figures/pareto.png}
    python -m hp.reporting.sweep --table             # the headline columns only, printed: nothing written
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from hp.errors import HPError
from hp.evaluation.bootstrap import Trials
from hp.reporting.experiments import NAME, SweepError, TrialsLoader, collect
from hp.reporting.headlines import HEADLINE_TRIALS
from hp.reporting.sweep_report import write_sweep_report
from hp.utils.files import atomic_path, read_json


def _read_shown(path: Path) -> list:
    return read_json(path, SweepError, list, "the list `dvc exp show --json` prints")


def _dvc() -> list[str]:
    """The dvc on PATH, else the one installed beside this Python."""
    return [shutil.which("dvc")] if shutil.which("dvc") else [sys.executable, "-m", "dvc"]


def cached_trials(repo: Path, cache: Path | None = None) -> TrialsLoader:
    """Reads an experiment's scored trials from `repo`'s DVC cache (`cache`: its directory; None: as `dvc cache dir`
    says): the scores/<task> directory `dvc exp show` lists by hash (DVC 3's layout: files/md5/<2 hex>/<rest>, a
    directory as a JSON listing of its files), its scores.parquet, the task's headline trials. None for an experiment
    whose scores are not in the cache or predate trials with speakers."""
    if cache is None:
        try:
            found = subprocess.run(_dvc() + ["cache", "dir"], cwd=repo, capture_output=True, text=True)
        except OSError:
            found = None
        cache = Path(found.stdout.strip()) if found is not None and found.returncode == 0 else None
    cache = None if cache is None else Path(cache) / "files" / "md5"

    def load(entry: dict, task: str) -> Trials | None:
        out = ((entry.get("data") or {}).get("outs") or {}).get(f"scores/{task}") or {}
        digest = str(out.get("hash") or "")
        if cache is None or not digest.endswith(".dir"):
            return None
        try:
            files = {f["relpath"]: f["md5"] for f in json.loads((cache / digest[:2] / digest[2:]).read_text())}
            digest = files["scores.parquet"]
            return HEADLINE_TRIALS[task](pd.read_parquet(cache / digest[:2] / digest[2:]))
        except (OSError, KeyError, ValueError, TypeError):
            return None

    return load


def _run_dvc(repo: Path, all_commits: bool) -> list:
    """`dvc exp show --json` in `repo`."""
    args = _dvc() + ["exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    try:
        result = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    except OSError as e:
        raise SweepError(f"cannot run dvc in {repo}: {e}") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SweepError(f"`dvc exp show --json` failed in {repo}: {last}")
    try:
        shown = json.loads(result.stdout)
    except json.JSONDecodeError as e:
        raise SweepError(f"`dvc exp show --json` in {repo} printed no JSON ({e})") from None
    if not isinstance(shown, list):
        raise SweepError(f"`dvc exp show --json` in {repo} printed no list")
    return shown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {NAME}", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository (default: .)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="read this saved `dvc exp show --json` output instead of running dvc")
    parser.add_argument("--all-commits", action="store_true",
                        help="experiments of every commit, not only of HEAD (dvc exp show -A)")
    parser.add_argument("--out", type=Path, default=Path("reports/sweep"), help="default: reports/sweep")
    parser.add_argument("--table", action="store_true",
                        help="print one line per experiment and task (target, achieved sparsity, parameters, EER with "
                             "its interval, latency), what `dvc exp show` buries among hundreds of columns; write "
                             "nothing")
    args = parser.parse_args(argv)
    try:
        shown = _read_shown(args.json) if args.json else _run_dvc(args.repo, args.all_commits)
        source = f"`{args.json}`" if args.json else "`dvc exp show --json" + (" -A`" if args.all_commits else "`")
        notes: list[str] = []
        table = collect(shown, notes, None if args.table else cached_trials(args.repo))
        if table.empty:
            raise SweepError("no usable experiment (none has metrics/sv.json or metrics/cm.json)"
                             + ("" if args.json or args.all_commits else "; experiments of older commits need "
                                "--all-commits"))
        if args.table:
            print(headline_table(table))
            for note in notes:
                print(f"note: {note}")
            return 0
        written = write_sweep_report(table, args.out, notes, source)
        if not args.json:  # what the report was drawn from, so that `--json` redraws it
            with atomic_path(args.out / "experiments.json") as tmp:
                tmp.write_text(json.dumps(shown, indent=1) + "\n")
            written.append(args.out / "experiments.json")
    except HPError as e:
        print(f"{NAME}: {e}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{t} {n}" for t, n in table["task"].value_counts(sort=False).items())
    print(f"{NAME}: wrote {', '.join(p.relative_to(args.out).as_posix() for p in written)} in {args.out} "
          f"({table['experiment'].nunique()} experiments; rows: {counts})")
    return 0


def headline_table(table: pd.DataFrame) -> str:
    """The columns a user compares, aligned: one line per experiment and task."""
    shown = pd.DataFrame({
        "experiment": table["experiment"], "task": table["task"],
        "target": [f"{t:g} {m}" for t, m in zip(table["target_sparsity"], table["target_measure"])],
        "achieved": table["achieved_sparsity"].map("{:.4f}".format),
        "params": table["params_compact"].map("{:,}".format),
        "EER % [95 %]": [f"{100 * e:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"
                         for e, lo, hi in zip(table["eer"], table["eer_ci95_lo"], table["eer_ci95_hi"])],
        "scored on": table["scored"],
        "latency ms": table["latency_ms"].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")})
    return shown.to_string(index=False)


if __name__ == "__main__":
    sys.exit(main())
