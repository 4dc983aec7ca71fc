"""Speaker verification: VoxCeleb (or the mini corpus in its layout), AAM-softmax over training speakers, cosine /
AS-norm / QMF scoring of trial lists, an embedding-only inference graph."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from hp.errors import ConfigError
from hp.params import integer, section, typed
from hp.tasks.base import Task, group_keys, mini_settings, synthesise


@dataclass(frozen=True)
class SVScoring:
    """params.yaml's score.sv."""

    mean_subtraction: bool  # the training set's mean embedding subtracted before cosine scoring
    asnorm_top_n: int | None  # AS-norm cohort size (None: off)
    qmf_trials: int | None  # QMF calibration's training trials (None: off)
    qmf_seed: int

    def __post_init__(self):
        for key in ("asnorm_top_n", "qmf_trials"):
            integer(getattr(self, key), f"score.sv.{key}", minimum=1, nullable=True)
        integer(self.qmf_seed, "score.sv.qmf_seed", minimum=0)


class SpeakerVerification(Task):
    name = "sv"
    outputs = ("embeddings",)  # not "embedding", which a node of MHFA's graph already has
    margin_loss = True
    head_loss_keys = ("margin", "scale", "subcenters", "topk", "topk_penalty")

    def prepare_settings(self, cfg):
        """prepare.sv checked whole: every key present, none other, the mini group when the corpus is mini."""
        from hp.data import synth, voxceleb

        cfg = group_keys(cfg, "prepare.sv", ("corpus", "trials", "train_on", "voxceleb1_dir", "voxceleb2_dir",
                                             "musan_dir", "rirs_dir"), optional=("mini",))
        corpus, mini = cfg.pop("corpus"), cfg.pop("mini", None)
        if corpus not in ("mini", "voxceleb"):
            raise ConfigError(f"params.yaml: prepare.sv.corpus must be 'mini' or 'voxceleb', got {corpus!r}")
        for key in ("trials", "train_on"):
            if not isinstance(cfg[key], list):
                raise ConfigError(f"params.yaml: prepare.sv.{key} must be a list, got {cfg[key]!r}")
            cfg[key] = tuple(cfg[key])
        source = typed(voxceleb.SVSource, cfg, "prepare.sv")
        source.check("prepare.sv")
        if corpus == "voxceleb":
            if source.voxceleb1_dir is None:
                raise ConfigError("params.yaml: prepare.sv.voxceleb1_dir is null; corpus voxceleb needs it")
            if "voxceleb2" in source.train_on and source.voxceleb2_dir is None:
                raise ConfigError("params.yaml: prepare.sv.voxceleb2_dir is null but train_on includes voxceleb2")
        else:
            for key in ("voxceleb1_dir", "voxceleb2_dir"):  # a set path would be ignored: say so instead
                if getattr(source, key) is not None:
                    raise ConfigError(f"params.yaml: prepare.sv.{key} is set but corpus is 'mini'; set corpus: "
                                      "voxceleb")
            if source.trials != ("O",) or source.train_on != ("voxceleb2",):
                raise ConfigError("params.yaml: the mini corpus has one trial list (O) and one training set "
                                  "(voxceleb2); set prepare.sv.trials: [O] and train_on: [voxceleb2]")
        return corpus, source, mini_settings(synth.write_sv_corpus, mini, "prepare.sv.mini", corpus == "mini")

    def prepare(self, cfg: dict, out: Path) -> dict:
        """mini: synthesise the corpus in VoxCeleb's layout; voxceleb: check the trees."""
        from hp.data import synth
        from hp.utils.files import atomic_dir

        corpus, source, mini = self.prepare_settings(cfg)
        here = Path.cwd()
        if corpus == "voxceleb":
            source = source.resolved(here)
            source.check_paths()
            with atomic_dir(out) as tmp:
                source.write(tmp / "corpus.json")
            return {"corpus": corpus, **asdict(source)}
        summary = synthesise(synth.write_sv_corpus, out, mini, "prepare.sv.mini")
        # MUSAN / RIRS_NOISES as given (made absolute); the corpus itself relative to corpus.json
        source = replace(source.resolved(here), voxceleb1_dir=synth.SV_DIRS["test"],
                         voxceleb2_dir=synth.SV_DIRS["train"])
        source.write(out / "corpus.json")
        return summary

    def manifest_tables(self, corpus, validation):
        from hp.data import voxceleb

        source = voxceleb.SVSource.read(corpus / "corpus.json")
        return source, voxceleb.sv_tables(source, validation)

    def write_manifest_extras(self, tables, out, summary):
        from hp.data.interop import write_kaldi_dir

        for name in ("train", "test"):  # the same lists for Kaldi/WeSpeaker SV recipes
            write_kaldi_dir(tables[name], out / "kaldi" / name)
        summary["trials_per_list"] = tables["trials"]["list"].value_counts(sort=False).to_dict()

    def labels(self, train):
        return sorted(train["label"].unique())  # speaker ids

    def loss(self, head, labels):
        from hp.heads.losses import AAMSoftmax

        return AAMSoftmax(head.embedding, len(labels), head.margin, head.scale, head.subcenters, head.topk,
                          head.topk_penalty)

    def check_head(self, head, labels):
        if head.class_weights is not None:
            raise ValueError("class_weights is a CM setting; SV's AAM-softmax takes none")

    def score_settings(self, params):
        return typed(SVScoring, section(params, "score.sv"), "score.sv")

    def score(self, model, manifests, batch_seconds, workers, settings, bootstrap=None):
        """hp.evaluation.scoring.score_sv on every trial list: cosine, AS-norm and QMF scores as `score.sv` asks; beside
        them the training-free hp.evaluation.baselines.score_ltas (metrics under "baseline_ltas": {list: EER,
        minDCF})."""
        import pandas as pd

        from hp.data.interop import write_trial_scores
        from hp.evaluation.baselines import score_ltas
        from hp.evaluation.scoring import score_sv
        from hp.utils.files import write_json
        from hp.utils.timing import timed

        trials, train, test = (pd.read_parquet(manifests / f"{name}.parquet") for name in ("trials", "train", "test"))
        top_n = settings.asnorm_top_n
        with timed("LTAS baseline", len(test)):  # first: every rank takes a share
            baseline = score_ltas(test, trials, train, num_workers=workers)[1]
        scored = score_sv(model, test, trials, train, batch_seconds, settings.mean_subtraction, top_n,
                          settings.qmf_trials, settings.qmf_seed, workers, bootstrap)
        if scored is None:  # a rank other than 0 under torchrun
            return None
        table, task_metrics, cosine = scored
        final = next(f"score_{kind}" for kind in ("qmf", "asnorm", "cosine") if f"score_{kind}" in table)
        exports = {f"{name}.txt": partial(write_trial_scores, rows, rows[final].to_numpy())
                   for name, rows in table.groupby("list", sort=False)}
        exports["cosine.json"] = partial(write_json, obj=cosine)
        first = table[table["list"] == table["list"].iat[0]]
        if top_n is not None:
            task_metrics["asnorm_top_n"] = min(top_n, train["speaker"].nunique())
        task_metrics.update(qmf_trials=settings.qmf_trials, det=f"{table['list'].iat[0]} {final}")
        task_metrics["baseline_ltas"] = baseline
        return table, task_metrics, exports, (first[final].to_numpy(), first["label"].to_numpy())

    def scoring(self, scores):
        from hp.utils.files import read_json

        return read_json(scores / "cosine.json", ConfigError)  # training mean embedding, cosine threshold

    def infer(self, model, embedding, calibration):
        return (embedding,)

    def score_exported(self, runs, manifests, scoring, batch_seconds, bootstrap=None):
        """The first trial list by cosine after scoring.json's mean (`python -m hp verify`'s score)."""
        import numpy as np
        import pandas as pd

        from hp.evaluation.score_norm import trial_scores
        from hp.evaluation.scoring import run_utterances, sv_metrics, trial_indices

        trials, test = (pd.read_parquet(manifests / f"{name}.parquet") for name in ("trials", "test"))
        name = trials["list"].iat[0]
        trials = trials[trials["list"] == name]
        test = test[test["utt"].isin(set(trials["enroll"]) | set(trials["test"]))].reset_index(drop=True)
        enroll, tested = trial_indices(test["utt"].tolist(), trials)
        speaker = test["speaker"].to_numpy()
        mean = 0.0 if scoring.get("mean") is None else np.asarray(scoring["mean"])
        result, outputs = {"test_set": f"trial list {name}", "trials": len(trials)}, {}
        for graph, run in runs.items():
            outputs[graph] = run_utterances(run, test, batch_seconds)
            scores = trial_scores(outputs[graph]["embeddings"] - mean, enroll, tested)
            result[graph] = sv_metrics(scores, trials["label"].to_numpy(), (speaker[enroll], speaker[tested]),
                                       bootstrap)
        return result, outputs
