"""Scoring a (compacted) task model: SV embeddings + cosine trials, CM bona fide scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hp import metrics
from hp.data.audio import pad_batch, read_audio
from hp.tasks import TaskModel

# ASVspoof5 CM costs (brief §5): bona fide is the positive class, P(spoof) = 0.05, C_fa = 10.
CM_P_TARGET, CM_C_MISS, CM_C_FA = 0.95, 1.0, 10.0
SV_P_TARGETS = (0.01, 0.05)


@torch.inference_mode()
def embed_utterances(model: TaskModel, table: pd.DataFrame, batch_seconds: float = 60.0) -> np.ndarray:
    """Embeddings of whole utterances, batched by similar length (sorted) to limit padding."""
    device = next(model.parameters()).device
    order = np.argsort(table["duration_s"].to_numpy(), kind="stable")
    out = np.zeros((len(table), model.head_config.embedding), dtype=np.float32)
    paths = table["path"].tolist()
    batch: list[int] = []

    def flush():
        waves, lengths = pad_batch([read_audio(paths[i]) for i in batch])
        out[batch] = model.embed(waves.to(device), lengths.to(device)).float().cpu().numpy()
        batch.clear()

    for i in order:
        batch.append(int(i))
        if len(batch) * table["duration_s"].iat[int(i)] >= batch_seconds:
            flush()
    if batch:
        flush()
    return out


def trial_indices(utts: list[str], trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of each trial's enrollment and test utterance in `utts`."""
    index = {u: i for i, u in enumerate(utts)}
    return (np.array([index[u] for u in trials["enroll"]], dtype=np.int64),
            np.array([index[u] for u in trials["test"]], dtype=np.int64))


def sv_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    result = {"eer": metrics.eer(scores, labels)}
    for p in SV_P_TARGETS:
        result[f"min_dcf_{p}"] = metrics.min_dcf(scores, labels, p)
    return result


def cm_metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    return {"eer": metrics.eer(scores, labels),
            "min_dcf": metrics.min_dcf(scores, labels, CM_P_TARGET, CM_C_MISS, CM_C_FA)}


def det_table(scores: np.ndarray, labels: np.ndarray, max_points: int = 400) -> pd.DataFrame:
    """DET points (false-alarm and miss rates), thinned to `max_points` for plotting."""
    p_fa, p_miss = metrics.det_curve(scores, labels)
    keep = np.unique(np.linspace(0, len(p_fa) - 1, min(max_points, len(p_fa))).round().astype(int))
    return pd.DataFrame({"p_fa": p_fa[keep], "p_miss": p_miss[keep]})
