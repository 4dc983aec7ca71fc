"""Anti-spoofing: ASVspoof5 / ASVspoof 2019 LA (or the mini corpus in ASVspoof5's layout), a bona fide vs spoof
classifier whose logit difference is the score, LLRs calibrated on dev, an inference graph that outputs them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from hp.errors import ConfigError
from hp.tasks.base import Task, group_keys, mini_settings, synthesise

CM_LABELS = ("spoof", "bonafide")  # class 1 = bona fide, the positive class of the CM metrics


@dataclass(frozen=True)
class CMScoring:
    """params.yaml's score.cm."""

    calibration_prior: float | None  # bona fide prior of the dev-fitted calibration (None: the DCF's effective one)

    def __post_init__(self):
        prior = self.calibration_prior
        if prior is not None and not 0 < prior < 1:
            raise ConfigError(f"params.yaml: score.cm.calibration_prior must be in (0, 1) or null, got {prior!r}")


class AntiSpoofing(Task):
    name = "cm"
    outputs = ("embeddings", "scores", "llrs")
    head_loss_keys = ("class_weights",)
    calibrated = True

    def prepare_settings(self, cfg):
        """prepare.cm checked whole: every key present, none other, the mini group when the corpus is mini."""
        from hp.data import asvspoof, synth
        from hp.data.source import AUGMENTATION_DIRS
        from hp.params import typed

        cfg = group_keys(cfg, "prepare.cm", ("corpus", *asvspoof.CORPUS_DIRS.values(), *AUGMENTATION_DIRS),
                         optional=("mini",))
        corpus, mini = cfg.pop("corpus"), cfg.pop("mini", None)
        if corpus != "mini" and corpus not in asvspoof.FORMATS:
            raise ConfigError(f"params.yaml: prepare.cm.corpus must be one of {['mini', *asvspoof.FORMATS]}, "
                              f"got {corpus!r}")
        dirs = {key: cfg.pop(key) for key in asvspoof.CORPUS_DIRS.values()}
        for key, value in dirs.items():
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"params.yaml: prepare.cm.{key} must be a directory or null, got {value!r}")
        source = typed(asvspoof.CMSource, {"corpus": "asvspoof5", "corpus_dir": ".", **cfg}, "prepare.cm")
        if corpus != "mini":
            key = asvspoof.CORPUS_DIRS[corpus]
            if dirs[key] is None:
                raise ConfigError(f"params.yaml: prepare.cm.{key} is null; corpus {corpus} needs it")
            source = replace(source, corpus=corpus, corpus_dir=dirs[key])
        return corpus, source, mini_settings(synth.write_cm_corpus, mini, "prepare.cm.mini", corpus == "mini")

    def prepare(self, cfg: dict, out: Path) -> dict:
        """mini: synthesise the corpus in ASVspoof5's layout; asvspoof5 / asvspoof2019la: check the tree (only the
        chosen corpus's directory is read, so both may be set)."""
        from hp.data import synth
        from hp.utils.files import atomic_dir

        corpus, source, mini = self.prepare_settings(cfg)
        here = Path.cwd()
        if corpus != "mini":
            source = source.resolved(here)
            source.check_paths()
            with atomic_dir(out) as tmp:
                source.write(tmp / "corpus.json")
            return asdict(source)
        summary = synthesise(synth.write_cm_corpus, out, mini, "prepare.cm.mini")
        replace(source.resolved(here), corpus_dir=".").write(out / "corpus.json")  # the corpus beside corpus.json
        return summary

    def manifest_tables(self, corpus, validation):
        from hp.data import asvspoof

        source = asvspoof.CMSource.read(corpus / "corpus.json")
        return source, asvspoof.cm_tables(source, validation)

    def labels(self, train):
        return list(CM_LABELS)  # class 1 = bona fide, the positive class of the CM metrics

    def loss(self, head, labels):
        from hp.heads.losses import SoftmaxClassifier

        return SoftmaxClassifier(head.embedding, len(labels), self.class_weights(head, labels))

    def check_head(self, head, labels):
        self.class_weights(head, labels)

    @staticmethod
    def class_weights(head, labels: list[str]) -> list[float] | None:
        """The head's cross-entropy weights in the order of `labels` (None: unweighted), one per label."""
        weights = head.class_weights
        if weights is None:
            return None
        if set(weights) != set(labels):
            raise ValueError(f"class_weights must name each of the labels {list(labels)} once, got {sorted(weights)}")
        return [float(weights[label]) for label in labels]

    def score_settings(self, params):
        from hp.params import section, typed

        return typed(CMScoring, section(params, "score.cm"), "score.cm")

    def score(self, model, manifests, batch_seconds, workers, settings, bootstrap=None):
        """hp.evaluation.scoring.score_cm: raw scores of dev and eval, LLRs calibrated on dev, metrics per split,
        attack, codec, and on the attacks the training manifest does not carry (unseen), pooled."""
        import pandas as pd

        from hp.data.interop import write_cm_scores
        from hp.evaluation.scoring import score_cm
        from hp.utils.files import write_json

        dev, evaluation = (pd.read_parquet(manifests / f"{split}.parquet") for split in ("dev", "eval"))
        train = pd.read_parquet(manifests / "train.parquet", columns=["label", "attack"])
        scored = score_cm(model, dev, evaluation, batch_seconds, settings.calibration_prior, workers, train=train,
                          bootstrap=bootstrap)
        if scored is None:  # a rank other than 0 under torchrun
            return None
        table, calibration, task_metrics = scored
        exports = {f"{split}.txt": partial(write_cm_scores, rows["utt"], rows["score_llr"].to_numpy())
                   for split, rows in table.groupby("split", sort=False)}
        exports["calibration.json"] = partial(write_json, obj=calibration.to_dict())
        rows = table[table["split"] == "eval"]
        task_metrics.update(calibration=calibration.to_dict(), det="eval llr")
        return table, task_metrics, exports, (rows["score_llr"].to_numpy(), (rows["label"] == "bonafide").to_numpy())

    def scoring(self, scores):
        from hp.evaluation import metrics
        from hp.utils.files import read_json

        return {"calibration": read_json(scores / "calibration.json", ConfigError),  # dev-fitted
                "threshold": metrics.bayes_threshold(metrics.CM_P_TARGET, metrics.CM_C_MISS, metrics.CM_C_FA),
                "threshold_rule": "Bayes decision of the ASVspoof5 DCF (P_spoof 0.05, C_miss 1, C_fa 10)"}

    def calibration(self, scoring):
        from hp.evaluation.calibration import LinearCalibration

        return LinearCalibration.from_dict(scoring["calibration"])

    def infer(self, model, embedding, calibration):
        score = model.cm_scores(embedding)
        weight, bias = calibration
        return embedding, score, score * weight + bias

    def score_exported(self, runs, manifests, scoring, batch_seconds, bootstrap=None):
        """The eval split by the graph's calibrated LLRs (`python -m hp detect`'s)."""
        import pandas as pd

        from hp.evaluation.scoring import cm_metrics, run_utterances

        evaluation = pd.read_parquet(manifests / "eval.parquet")
        labels = (evaluation["label"] == "bonafide").to_numpy().astype(int)
        result, outputs = {"test_set": "eval", "trials": len(evaluation)}, {}
        for graph, run in runs.items():
            outputs[graph] = run_utterances(run, evaluation, batch_seconds)
            result[graph] = cm_metrics(outputs[graph]["llrs"].astype("float64"), labels,
                                       evaluation["speaker"].to_numpy(), bootstrap)
        return result, outputs

    def inference_modules(self, model):
        return model.frontend, model.backend, model.loss  # the classifier whose logits give the score
