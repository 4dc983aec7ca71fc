"""Scoring a (compacted) task model: SV embeddings + cosine trials per list, CM calibrated bona fide LLRs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from hp.data.audio import pad_batch, read_audio
from hp.evaluation import metrics
from hp.evaluation.bootstrap import MIN_SPOOFS_FOR_INTERVAL, Bootstrap
from hp.evaluation.calibration import LinearCalibration, fit_logistic, qmf_features, sample_trials
from hp.evaluation.metrics import CM_C_FA, CM_C_MISS, CM_COSTS, CM_P_TARGET, SV_COSTS
from hp.evaluation.score_norm import score_trials
from hp.utils import distributed
from hp.utils.progress import Progress, stage_name
from hp.utils.timing import timed

if TYPE_CHECKING:  # annotations only: scoring takes any model with embed() and cm_scores()
    from hp.tasks.task_model import TaskModel


def length_batches(durations: np.ndarray, batch_seconds: float) -> list[np.ndarray]:
    """Utterance indices in batches of similar length: sorted by duration, a batch closes once its padded size
    (count x longest) reaches `batch_seconds`, so little of any batch is padding."""
    batches, batch = [], []
    for i in np.argsort(durations, kind="stable"):
        batch.append(int(i))
        if len(batch) * durations[i] >= batch_seconds:
            batches.append(np.array(batch))
            batch = []
    if batch:
        batches.append(np.array(batch))
    return batches


class PaddedBatches(Dataset):
    """Item k: the k-th length batch of `table`, decoded and zero-padded, with its row indices; a DataLoader
    with workers decodes the next batches while the model embeds this one."""

    def __init__(self, table: pd.DataFrame, batch_seconds: float):
        self.paths = table["path"].tolist()
        self.batches = length_batches(table["duration_s"].to_numpy(), batch_seconds)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int):
        rows = self.batches[k]
        waves, lengths = pad_batch([read_audio(self.paths[i]) for i in rows])
        return torch.from_numpy(rows), waves, lengths


@torch.inference_mode()
def embed_utterances(model: TaskModel, table: pd.DataFrame, batch_seconds: float = 60.0,
                     num_workers: int = 0) -> np.ndarray:
    """Embeddings of whole utterances, in length batches (PaddedBatches), decoded by `num_workers` processes; under
    torchrun shared out over the ranks, each of which gets them all."""
    device = next(model.parameters()).device
    out = np.zeros((len(table), model.head_config.embedding), dtype=np.float32)
    batches = PaddedBatches(table, batch_seconds)
    # under torchrun each rank embeds every world_size()-th batch; the batches are those of one process, so the
    # embeddings are too (to float rounding: a process's thread count can change a sum's order)
    shared = distributed.share(len(batches)).tolist()
    loader = DataLoader(Subset(batches, shared), batch_size=None, num_workers=num_workers)
    with Progress(stage_name("embed"), len(shared), unit="batch",
                  items_per_unit=len(table) / max(len(batches), 1)) as progress:
        for rows, waves, lengths in loader:
            out[rows.numpy()] = model.embed(waves.to(device), lengths.to(device)).float().cpu().numpy()
            progress.update()
    return distributed.all_sum(out)


def run_utterances(run, table: pd.DataFrame, batch_seconds: float = 60.0) -> dict[str, np.ndarray]:
    """The outputs of `run` (any callable (wave, lengths) -> {name: array} on numpy batches: an ONNX session, say)
    for every utterance of `table`, in its row order, decoded in length batches as embed_utterances does."""
    batches = PaddedBatches(table, batch_seconds)
    out: dict[str, np.ndarray] = {}
    with Progress(stage_name("run"), len(batches), unit="batch", items_per_unit=len(table) / max(len(batches), 1)
                  ) as progress:
        for k in range(len(batches)):
            rows, waves, lengths = batches[k]
            for name, value in run(waves.numpy(), lengths.numpy()).items():
                if name not in out:
                    out[name] = np.zeros((len(table), *value.shape[1:]), dtype=value.dtype)
                out[name][rows.numpy()] = value
            progress.update()
    return out


def trial_indices(utts: list[str], trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of each trial's enrollment and test utterance in `utts`."""
    index = pd.Index(utts)
    found = [index.get_indexer(trials[side]) for side in ("enroll", "test")]  # hash lookups, no Python loop
    for side, rows in zip(("enroll", "test"), found):
        if (rows < 0).any():
            raise KeyError(f"trial {side} utterance {trials[side].iat[int(np.argmax(rows < 0))]} is not in the table")
    return found[0].astype(np.int64), found[1].astype(np.int64)


def sv_metrics(scores: np.ndarray, labels: np.ndarray, speakers: tuple[np.ndarray, np.ndarray] | None = None,
               bootstrap: Bootstrap | None = None) -> dict:
    """EER and each minDCF of metrics.SV_COSTS; with `bootstrap`, their intervals over the trials' (enroll, test)
    `speakers`."""
    result = {"eer": metrics.eer(scores, labels)}
    for name, cost in SV_COSTS.items():
        result[name] = metrics.min_dcf(scores, labels, *cost)
    if bootstrap is not None:
        result = bootstrap.intervals(result, scores, labels, SV_COSTS, *speakers)[0]
    return result


def cm_metrics(llrs: np.ndarray, labels: np.ndarray, speakers: np.ndarray | None = None,
               bootstrap: Bootstrap | None = None) -> dict:
    """ASVspoof5's four (docs/references.md §5); actDCF and Cllr only mean something for calibrated LLRs. With
    `bootstrap`, EER and minDCF intervals over the utterances' `speakers`."""
    result = {"eer": metrics.eer(llrs, labels), "min_dcf": metrics.min_dcf(llrs, labels, *CM_COSTS["min_dcf"]),
              "act_dcf": metrics.act_dcf(llrs, labels, *CM_COSTS["min_dcf"]), "cllr": metrics.cllr(llrs, labels)}
    if bootstrap is not None:
        result = bootstrap.intervals(result, llrs, labels, CM_COSTS, speakers)[0]
    return result


def seen_attacks(train: pd.DataFrame) -> set[str]:
    """The attacks some training utterance carries (its spoofs' ATTACK_LABEL / SYSTEM_ID)."""
    return set(train.loc[train["label"] != "bonafide", "attack"])


def cm_breakdown(rows: pd.DataFrame, llrs: np.ndarray, seen: set[str] | None = None,
                 bootstrap: Bootstrap | None = None) -> dict:
    """Metrics of one split per attack (all bona fide vs that attack's spoofs) and per codec (the utterances
    with that codec; '-' is none); a codec group holding one class only reports its size.

    With `seen` (seen_attacks of the training set), each attack says whether it is `unseen` in training, and
    "unseen" pools the split's bona fide utterances with the spoofs of all its unseen attacks: {attacks (their
    names), bonafide, spoofs} and, when there is such a spoof, the four metrics.

    With `bootstrap`, an attack of at least MIN_SPOOFS_FOR_INTERVAL spoofs gets intervals (over its utterances'
    speakers)."""
    labels = (rows["label"] == "bonafide").to_numpy()
    speakers = rows["speaker"].to_numpy() if bootstrap is not None else None
    out: dict = {"attacks": {}, "codecs": {}}
    for attack in sorted(rows.loc[~labels, "attack"].unique()):
        keep = labels | (rows["attack"] == attack).to_numpy()
        spoofs = int((keep & ~labels).sum())
        boot = bootstrap if spoofs >= MIN_SPOOFS_FOR_INTERVAL else None
        who = None if boot is None else speakers[keep]
        out["attacks"][attack] = {"spoofs": spoofs, **cm_metrics(llrs[keep], labels[keep], who, boot),
                                  **({} if seen is None else {"unseen": attack not in seen})}
    if seen is not None:
        unseen = [attack for attack in out["attacks"] if attack not in seen]
        spoofs = ~labels & rows["attack"].isin(unseen).to_numpy()
        keep = labels | spoofs
        out["unseen"] = {"attacks": unseen, "bonafide": int(labels.sum()), "spoofs": int(spoofs.sum()),
                         **(cm_metrics(llrs[keep], labels[keep]) if spoofs.any() and labels.any() else {})}
    for codec in sorted(rows["codec"].unique()):
        keep = (rows["codec"] == codec).to_numpy()
        counts = {"bonafide": int((keep & labels).sum()), "spoof": int((keep & ~labels).sum())}
        both = counts["bonafide"] and counts["spoof"]
        out["codecs"][codec] = {**counts, **(cm_metrics(llrs[keep], labels[keep]) if both else {})}
    return out


def score_cm(model: TaskModel, dev: pd.DataFrame, evaluation: pd.DataFrame, batch_seconds: float = 60.0,
             prior: float | None = None, num_workers: int = 0, train: pd.DataFrame | None = None,
             bootstrap: Bootstrap | None = None) -> tuple[pd.DataFrame, LinearCalibration, dict] | None:
    """Raw scores (bona fide - spoof logit) of dev and eval, LLRs from a logistic regression fitted on dev at
    bona fide prior `prior` (None: the effective prior of the ASVspoof5 DCF), metrics of both splits.

    Returns the utterances of both splits (speakers included) with columns score_raw and score_llr, the
    calibration, and {split: {utterances, bonafide, spoof, eer, min_dcf, act_dcf, cllr, raw: {act_dcf, cllr},
    attacks, codecs}}.
    Dev's actDCF and Cllr are those of the data the calibration was fitted on (optimistic); eval's are honest.
    Under torchrun every rank embeds a share and only rank 0 scores: the others get None.
    With `train` (the training manifest; its label and attack columns are read), each attack is marked unseen or
    not and each split has "unseen": its bona fide utterances against the spoofs of attacks unseen in training,
    pooled (cm_breakdown). With `bootstrap` (speaker-level, hp.evaluation.bootstrap), each split's EER and minDCF, and
    each attack's with enough spoofs, get intervals, and the results say how ("bootstrap": Bootstrap.describe).
    """
    if prior is None:
        prior = metrics.effective_prior(CM_P_TARGET, CM_C_MISS, CM_C_FA)
    tables = {"dev": dev, "eval": evaluation}
    raw = {}
    for split, table in tables.items():
        embeddings = embed_utterances(model, table, batch_seconds, num_workers)
        with torch.inference_mode():
            raw[split] = model.cm_scores(torch.from_numpy(embeddings)).double().cpu().numpy()
    if not distributed.is_main():  # under torchrun the ranks shared the embedding; rank 0 scores
        return None
    labels = {split: (table["label"] == "bonafide").to_numpy().astype(int) for split, table in tables.items()}
    calibration = fit_logistic(raw["dev"], labels["dev"], prior=prior)
    results, scored = {}, []
    for split, table in tables.items():
        llrs, y = calibration.llr(raw[split]), labels[split]
        speakers = table["speaker"].to_numpy() if bootstrap is not None else None
        results[split] = {"utterances": len(y), "bonafide": int(y.sum()), "spoof": int(len(y) - y.sum()),
                          **cm_metrics(llrs, y, speakers, bootstrap),
                          "raw": {"act_dcf": metrics.act_dcf(raw[split], y, *CM_COSTS["min_dcf"]),
                                  "cllr": metrics.cllr(raw[split], y)},
                          **cm_breakdown(table, llrs, None if train is None else seen_attacks(train), bootstrap)}
        scored.append(table[["utt", "split", "speaker", "label", "attack", "codec", "gender"]]
                      .assign(score_raw=raw[split], score_llr=llrs))
    if bootstrap is not None:
        results["bootstrap"] = bootstrap.describe({split: t["speaker"].nunique() for split, t in tables.items()})
    return pd.concat(scored, ignore_index=True), calibration, results


def score_sv(model: TaskModel, test: pd.DataFrame, trials: pd.DataFrame, train: pd.DataFrame,
             batch_seconds: float = 60.0, mean_subtraction: bool = True, top_n: int | None = 300,
             qmf_trials: int | None = None, qmf_seed: int = 0, num_workers: int = 0,
             bootstrap: Bootstrap | None = None) -> tuple[pd.DataFrame, dict, dict] | None:
    """Score every trial (of all lists at once: each utterance is embedded once) and evaluate each list.

    Scores: cosine after the training mean is subtracted (`mean_subtraction`), AS-norm with the training
    speakers as cohort (`top_n`; None: off), and QMF (`qmf_trials` trials drawn from the training set train
    a logistic regression on the AS-normed (else cosine) score, the trial's durations and embedding norms;
    None: off). Returns the trials with their enroll_speaker and test_speaker and a column `score_<kind>` per kind
    (cosine, asnorm, qmf: the last is the system's final score), {"lists": {list: {"trials": n, kind: metrics}}},
    and what scoring a new trial by cosine needs: {"mean": the training mean embedding (None without mean
    subtraction), "threshold": the EER threshold of the first list's cosine scores, "threshold_rule": saying so}.
    Under torchrun every rank embeds a share and only rank 0 scores: the others get None. With `bootstrap`
    (speaker-level, hp.evaluation.bootstrap), every EER and minDCF gets an interval, and the results say how
    ("bootstrap": Bootstrap.describe).
    """
    with timed("embed test", len(test)):
        test_emb = embed_utterances(model, test, batch_seconds, num_workers)
    with timed("embed train", len(train)):
        train_emb = embed_utterances(model, train, batch_seconds, num_workers)
    if not distributed.is_main():  # under torchrun the ranks shared the embedding; rank 0 scores
        return None
    speakers = train["speaker"].to_numpy()
    with timed("trial indices", len(trials)):
        enroll, test_idx = trial_indices(test["utt"].tolist(), trials)
    scored = score_trials(test_emb, enroll, test_idx, train_emb, speakers, mean_subtraction, top_n)
    columns = {"cosine": scored["raw"], **({"asnorm": scored["asnorm"]} if "asnorm" in scored else {})}
    if qmf_trials is not None:
        # quality measures: the score the system would output, durations and norms of both sides
        def features(emb, table, e, t, s):
            seconds, norms = table["duration_s"].to_numpy(), np.linalg.norm(emb, axis=1)
            return qmf_features(s, seconds[e], seconds[t], norms[e], norms[t])
        e, t, y = sample_trials(speakers, qmf_trials, qmf_seed)
        used, inverse = np.unique(np.concatenate([e, t]), return_inverse=True)  # only these need statistics
        held = score_trials(train_emb[used], inverse[:len(e)], inverse[len(e):], train_emb, speakers,
                            mean_subtraction, top_n, speakers=speakers[used])
        last = "asnorm" if "asnorm" in held else "raw"
        calibration = fit_logistic(features(train_emb, train, e, t, held[last]), y)
        columns["qmf"] = calibration.llr(features(test_emb, test, enroll, test_idx, scored[last]))
    labels = trials["label"].to_numpy()
    speaker = test["speaker"].to_numpy()
    results, speakers = {}, {}
    for name, rows in trials.groupby("list", sort=False).indices.items():
        sides = (speaker[enroll[rows]], speaker[test_idx[rows]])
        results[name] = {"trials": len(rows)}
        for kind, score in columns.items():
            with timed(f"metrics {name} {kind}", len(rows)):
                results[name][kind] = sv_metrics(score[rows], labels[rows], sides, bootstrap)
        speakers[name] = len(np.unique(np.concatenate(sides)))
    first = trials.groupby("list", sort=False).indices[trials["list"].iat[0]]
    cosine = {"mean": train_emb.mean(0).tolist() if mean_subtraction else None,
              "threshold": metrics.eer_threshold(columns["cosine"][first], labels[first]),
              "threshold_rule": f"EER of the cosine scores on trial list {trials['list'].iat[0]} (fitted on the "
                                "evaluation trials themselves, so optimistic: set one from held-out trials)"}
    evaluated = {"lists": results, **({"bootstrap": bootstrap.describe(speakers)} if bootstrap is not None else {})}
    # each trial's speakers beside its scores: what a paired bootstrap of two systems resamples
    # (hp.evaluation.bootstrap.paired)
    table = trials.assign(enroll_speaker=speaker[enroll], test_speaker=speaker[test_idx],
                          **{f"score_{kind}": score for kind, score in columns.items()})
    return table, evaluated, cosine


def det_table(scores: np.ndarray, labels: np.ndarray, max_points: int = 400) -> pd.DataFrame:
    """DET points (false-alarm and miss rates), thinned to `max_points` for plotting."""
    p_fa, p_miss = metrics.det_curve(scores, labels)
    keep = np.unique(np.linspace(0, len(p_fa) - 1, min(max_points, len(p_fa))).round().astype(int))
    return pd.DataFrame({"p_fa": p_fa[keep], "p_miss": p_miss[keep]})
