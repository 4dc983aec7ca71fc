"""The random-stream keys of all synthetic audio (mini corpora and pretraining): one independent stream per file's
key, so that any file's audio depends only on its own key and no two writers ever draw the same stream."""
from __future__ import annotations

import numpy as np

SV, CM, PRETRAIN = 1, 2, 3  # corpus codes in random-stream keys (PRETRAIN: hp.training.pretraining's corpus)
SPEAKER, SESSION, UTTERANCE, SPOOF, ORDER, CODEC, TRIALS = range(7)  # roles in random-stream keys


def stream(*key: int) -> np.random.Generator:
    """An independent stream per (seed, corpus, role, indices): any file's audio depends only on its own key."""
    return np.random.default_rng(key)


def cm_role(label: str) -> int:
    """The role in a CM file's keys: bona fide utterances and spoofs (ATTACK_LABEL) draw from streams of their own."""
    return UTTERANCE if label == "bonafide" else SPOOF
