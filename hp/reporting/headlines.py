"""The point a sweep plots per task: its metrics from metrics/<task>.json ("eer" and the minDCF named next, with their
intervals where scored with them; that minDCF's name; what was scored), and its trials for paired intervals."""
from __future__ import annotations

import pandas as pd

from hp.data.voxceleb import TRIAL_NAMES
from hp.evaluation.bootstrap import Trials
from hp.evaluation.metrics import CM_COSTS, SV_COSTS

TASKS = ("sv", "cm")
SCORING_NAMES = {"qmf": "QMF", "asnorm": "AS-norm", "cosine": "cosine"}


def sv_headline(scored: dict, corpus: str | None) -> tuple[dict, str, str]:
    """The first trial list, final scoring: QMF, else AS-norm, else cosine; minDCF at p = 0.01."""
    lists = scored.get("lists") or {}
    if not lists:
        raise KeyError("no trial lists")
    name, scores = next(iter(lists.items()))
    kind = next((k for k in SCORING_NAMES if k in scores), None)
    if kind is None:
        raise KeyError(f"a scoring ({', '.join(SCORING_NAMES)}) of list {name}")
    shown = TRIAL_NAMES.get(name, name) if corpus == "voxceleb" else f"list {name}"
    return scores[kind], "min_dcf_0.01", f"{shown}, {SCORING_NAMES[kind]}"


def cm_headline(scored: dict, corpus: str | None) -> tuple[dict, str, str]:
    """The eval split, minDCF as ASVspoof5 defines it."""
    return scored["eval"], "min_dcf", "eval"


def sv_headline_trials(table: pd.DataFrame) -> Trials:
    """The headline's trials in the score stage's scores.parquet (first list, final scoring), for a paired
    comparison (hp.evaluation.bootstrap.compare); KeyError for a table written before trials carried their speakers."""
    rows = table[table["list"] == table["list"].iat[0]]
    kind = next(k for k in SCORING_NAMES if f"score_{k}" in rows)
    return Trials((rows["enroll"] + " " + rows["test"]).to_numpy(), rows[f"score_{kind}"].to_numpy(),
                  rows["label"].to_numpy(), (rows["enroll_speaker"].to_numpy(), rows["test_speaker"].to_numpy()),
                  {"min_dcf_0.01": SV_COSTS["min_dcf_0.01"]})


def cm_headline_trials(table: pd.DataFrame) -> Trials:
    """The eval split's utterances in the score stage's scores.parquet, LLRs, for a paired comparison; KeyError for
    a table written before utterances carried their speakers."""
    rows = table[table["split"] == "eval"]
    return Trials(rows["utt"].to_numpy(), rows["score_llr"].to_numpy(), (rows["label"] == "bonafide").to_numpy(),
                  (rows["speaker"].to_numpy(),), CM_COSTS)


HEADLINES = {"sv": sv_headline, "cm": cm_headline}
HEADLINE_TRIALS = {"sv": sv_headline_trials, "cm": cm_headline_trials}
