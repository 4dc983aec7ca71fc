"""SV scoring from embeddings on random data with speaker structure: cosine trials, AS-norm, EER and minDCF; wall time.

    python -m hp.benchmarks scoring --json  # 550k trials over 5k utterances (256-d), a 6k-speaker cohort
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hp.evaluation.score_norm import score_trials
from hp.evaluation.scoring import sv_metrics


def scoring(args: argparse.Namespace) -> dict:
    """SV scoring from embeddings: cosine trials, AS-norm (training-speaker cohort), EER and minDCF."""
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    # speaker structure, so that the metrics are computed on a non-degenerate score distribution
    speakers = rng.integers(0, args.utterances // 10, args.utterances)
    centres = rng.normal(size=(args.utterances // 10, args.dim)).astype(np.float32)
    embeddings = centres[speakers] + 1.5 * rng.normal(size=(args.utterances, args.dim)).astype(np.float32)
    train = rng.normal(size=(args.cohort * 4, args.dim)).astype(np.float32)
    train_speakers = np.repeat(np.arange(args.cohort), 4)
    enroll = rng.integers(0, args.utterances, args.trials)
    test = np.where(rng.random(args.trials) < 0.5, rng.integers(0, args.utterances, args.trials),
                    _same_speaker(speakers, enroll, rng))
    labels = (speakers[enroll] == speakers[test]).astype(int)
    start = time.perf_counter()
    scored = score_trials(embeddings, enroll, test, train, train_speakers, top_n=args.top_n)
    results = {name: sv_metrics(s, labels) for name, s in scored.items()}
    seconds = time.perf_counter() - start
    return {"benchmark": "scoring", "utterances": args.utterances, "trials": args.trials, "cohort": args.cohort,
            "top_n": args.top_n, "dim": args.dim, "threads": args.threads, "seconds": round(seconds, 3),
            "target_trials": int(labels.sum()), "eer_raw": results["raw"]["eer"],
            "eer_asnorm": results["asnorm"]["eer"], "torch": torch.__version__}


def _same_speaker(speakers: np.ndarray, enroll: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each enrollment utterance, a random utterance of the same speaker (target trials)."""
    order = np.argsort(speakers, kind="stable")
    starts = np.searchsorted(speakers[order], speakers[enroll], "left")
    ends = np.searchsorted(speakers[order], speakers[enroll], "right")
    return order[starts + (rng.random(len(enroll)) * (ends - starts)).astype(int)]


def add_parser(sub) -> None:
    p = sub.add_parser("scoring", help="SV scoring with AS-norm on random embeddings: wall time")
    p.add_argument("--utterances", type=int, default=5000)
    p.add_argument("--trials", type=int, default=550_000)
    p.add_argument("--cohort", type=int, default=6000, help="training speakers (4 utterances each)")
    p.add_argument("--top-n", type=int, default=300)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=scoring)
