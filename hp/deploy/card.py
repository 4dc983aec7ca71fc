"""The model card of a released folder (its README.md): what a person downloading the model reads first.

Every number comes from the run's own files (the score stage's metrics, the compacted structure, this export's
measurements), never typed by hand: tests/unit/test_card.py reads the card back and compares it with them. The
metadata header is the YAML block model hubs read (https://huggingface.co/docs/hub/model-cards: library_name,
license, base_model, tags, and model-index for the results). The card is a function of the stage's declared inputs
only, so a re-export of the same run writes the same card; how this run's params differ from the committed ones is
the report's business (hp.reporting.report).
"""
from __future__ import annotations

from dataclasses import dataclass

import yaml

# Licences of the families' public checkpoints as their model cards on the Hugging Face hub state them (the
# `license:` of each card's metadata); WavLM's cards state none.
LICENCES = {
    "facebook/hubert-": ("apache-2.0", "Apache 2.0, as the base checkpoint's model card states"),
    "facebook/wav2vec2-": ("apache-2.0", "Apache 2.0, as the base checkpoint's model card states"),
    "microsoft/wavlm-": ("other", "not stated by the base checkpoint's model card; WavLM's code (github.com/microsoft/"
                                  "unilm) is under the MIT licence. Check the base model's terms before you redistribute"),
}
TOY = "models/pretrained/tiny"  # hp's own mini front end (params.yaml model.pretrained)
TASKS = {"sv": ("speaker-verification", "Speaker verification"), "cm": ("anti-spoofing", "Spoofing detection (CM)")}
FAMILIES = {"wavlm": "WavLM", "hubert": "HuBERT", "wav2vec2": "wav2vec 2.0"}


@dataclass(frozen=True)
class CardInputs:
    """What the card is made from, each as its stage wrote it."""
    task: str
    source: str  # params.yaml model.pretrained.<task>
    corpus: str  # prepare.<task>.corpus: mini, voxceleb, asvspoof5, ...
    scored: dict  # metrics/<task>.json (score stage)
    task_json: dict  # the bundle's task.json: front-end config and kept structure
    export: dict  # metrics/<task>/export.json as this stage writes it
    training: dict  # metrics/<task>/finetune.json
    data: dict  # data/<task>/manifests/summary.json
    settings: dict  # params.yaml finetune.<task>


def licence(source: str) -> tuple[str, str]:
    """(hub licence id, a sentence) for the base checkpoint `source`."""
    if source == TOY:
        return "other", ("hp's own mini front end, pretrained by hp on synthetic speech: no third-party weights or "
                         "data; the same terms as hp")
    for prefix, known in LICENCES.items():
        if source.startswith(prefix):
            return known
    return "other", f"unknown: see the base checkpoint's ({source}) own terms"


def percent(x: float) -> float:
    return round(100 * x, 2)


def with_interval(metrics: dict, key: str, scale: float = 1.0, digits: int = 4) -> str:
    value = round(scale * metrics[key], digits)
    ci = metrics.get(f"{key}_ci95")
    return f"{value:g}" if ci is None else f"{value:g} [{round(scale * ci['lo'], digits):g}, " \
                                          f"{round(scale * ci['hi'], digits):g}]"


def headline(inputs: CardInputs) -> tuple[str, dict]:
    """(name of what was scored, its metrics) the card leads with: SV the first list's cosine scores (what the CLI
    computes), CM the eval split's calibrated LLRs."""
    if inputs.task == "sv":
        name, lists = next(iter(inputs.scored["lists"].items()))
        return f"trial list {name}, cosine scoring", lists["cosine"]
    return "eval split, calibrated LLRs", inputs.scored["eval"]


def results(inputs: CardInputs) -> list[tuple[str, str, dict]]:
    """(scored set, scoring, metrics) rows: every list and scoring (SV), dev and eval (CM)."""
    if inputs.task == "sv":
        return [(f"trial list {name}", kind, m) for name, lists in inputs.scored["lists"].items()
                for kind, m in lists.items() if isinstance(m, dict) and "eer" in m]
    return [(split, "calibrated LLR", inputs.scored[split]) for split in ("dev", "eval")]


def metadata(inputs: CardInputs) -> dict:
    kind, title = TASKS[inputs.task]
    family = inputs.task_json["frontend"].get("model_type", "wavlm")
    scored_name, m = headline(inputs)
    values = [{"type": "eer", "name": "EER (%)", "value": percent(m["eer"])}]
    values += [{"type": key, "name": key, "value": round(v, 4)} for key, v in m.items()
               if key.startswith(("min_dcf", "act_dcf", "cllr")) and isinstance(v, float)]
    meta = {"library_name": "hp", "license": licence(inputs.source)[0],
            "tags": [kind, "structured-pruning", family, "onnx", "int8"],
            "model-index": [{"name": f"hp-{inputs.task}-{family}-sparsity-{inputs.scored['target_sparsity']}",
                             "results": [{"task": {"type": kind, "name": title},
                                          "dataset": {"type": inputs.corpus, "name": inputs.corpus,
                                                      "split": scored_name},
                                          "metrics": values}]}]}
    if inputs.source != TOY and "/" in inputs.source and not inputs.source.startswith(("/", ".")):
        meta["base_model"] = inputs.source
    return meta


def structure_table(task_json: dict) -> list[str]:
    cfg, kept = task_json["frontend"], task_json["structure"]
    heads, ffn = cfg["num_attention_heads"], cfg["intermediate_size"]
    rows = ["| layer | attention heads kept | FFN units kept |", "|---|---|---|"]
    for i, layer in enumerate(kept["layers"]):
        att = f"{len(layer['heads'])}/{heads}" if layer["use_attention"] else f"0/{heads} (block removed)"
        mlp = f"{layer['ffn_dim']}/{ffn}" if layer["use_ffn"] else f"0/{ffn} (block removed)"
        rows.append(f"| {i} | {att} | {mlp} |")
    channels = ", ".join(f"{k}/{n}" for k, n in zip(kept["conv_channels"], cfg["conv_dim"]))
    return rows + ["", f"CNN channels kept per layer: {channels}."]


def usage(task: str) -> list[str]:
    output = "embeddings" if task == "sv" else "llrs"
    verb = "verify enroll.wav test.wav" if task == "sv" else "detect *.wav"
    return [
        "With hp (PyTorch):", "", "```python", "import numpy as np",
        "from hp.deploy.export import Bundle",
        f"bundle = Bundle.load('models/{task}/export')  # checks SHA256SUMS first",
        "wave = np.zeros((1, 32000), np.float32)  # 16 kHz mono, [batch, samples]",
        f"out = bundle.runner('torch')(wave, np.array([32000]))['{output}']", "```", "",
        "With onnxruntime and numpy only (no torch, no hp):", "", "```python",
        "import json, wave, numpy as np, onnxruntime as ort",
        "with wave.open('speech.wav') as f:  # 16 kHz, mono, 16-bit PCM",
        "    x = (np.frombuffer(f.readframes(f.getnframes()), np.int16) / 32768).astype(np.float32)[None]",
        f"session = ort.InferenceSession('models/{task}/export/model.int8.onnx')  # or model.onnx (fp32)",
        f"{output} = session.run(['{output}'], {{'wave': x, 'lengths': np.array([x.shape[1]])}})[0]", "```", "",
        ("SV scores a trial as the cosine of two embeddings after subtracting scoring.json's `mean`; its "
         "`threshold` is the EER threshold of the test list." if task == "sv" else
         "CM's `llrs` are calibrated natural-log likelihood ratios (bona fide vs spoof); scoring.json's `threshold` "
         "is the ASVspoof5 DCF's Bayes decision."), "",
        "From the command line (any audio soundfile reads, any rate):", "", "```sh",
        f"python -m hp {verb} --model models/{task}/export            # PyTorch",
        f"python -m hp {verb} --model models/{task}/export --int8     # onnxruntime, int8", "```"]


def model_card(inputs: CardInputs) -> str:
    """The card's Markdown, YAML metadata first."""
    task, scored, export = inputs.task, inputs.scored, inputs.export
    cfg = inputs.task_json["frontend"]
    family = FAMILIES.get(cfg.get("model_type", "wavlm"), cfg.get("model_type"))
    kind, title = TASKS[task]
    toy = inputs.corpus == "mini"
    int8, tested = export["int8"], export["test_set"]
    hw = export["hardware"]
    latency = export["compact"]["latency_ms"]
    lines = ["---", yaml.safe_dump(metadata(inputs), sort_keys=False).strip(), "---", "",
             f"# {title}: {family} pruned to {scored['achieved_sparsity']:.1%} sparsity", "",
             f"A {family} front end ({inputs.source}, {cfg['num_hidden_layers']} layers, hidden size "
             f"{cfg['hidden_size']}) fine-tuned for {title.lower()} while hp learned structured pruning masks "
             f"(hard-concrete gates held to a {scored['target_measure']} sparsity of {scored['target_sparsity']} by a "
             "Lagrangian), then physically compacted: the weights here are the small model, not a masked large one.",
             ""]
    if toy:
        lines += ["> **Toy scale.** Trained and scored on hp's synthetic mini corpus: its numbers say that the "
                  "pipeline works end to end, not how the model does on real speech. Do not use it for anything "
                  "else.", ""]
    lines += ["## Size and speed", "",
              "| | dense | compact |", "|---|---|---|",
              f"| front-end parameters | {scored['params_dense']:,} | {scored['params_compact']:,} |",
              f"| front-end MACs ({scored['macs_reference_seconds']:g} s) | {scored['macs_dense']:,} | "
              f"{scored['macs_compact']:,} |",
              f"| sparsity (params / MACs) | | {scored['params_sparsity']:.4f} / {scored['macs_sparsity']:.4f} |", "",
              f"Latency of one {export['input']['seconds']:g} s utterance, median of {export.get('repeats', 'the')} "
              f"runs on {hw['cpu']} ({hw['torch_threads']} thread{'s' if hw['torch_threads'] != 1 else ''}):", "",
              "| runtime | file | size | latency | EER on the test set |", "|---|---|---|---|---|",
              f"| PyTorch, dense (fresh weights: cost only) | | | {export['dense']['latency_ms']['torch_cpu']:g} ms | |",
              f"| PyTorch, compact | model.safetensors | | {latency['torch_cpu']:g} ms | |",
              f"| onnxruntime fp32 | model.onnx | {export['onnx']['bytes'] / 1e6:.2f} MB | "
              f"{latency['onnxruntime_cpu']:g} ms | {with_interval(tested['fp32'], 'eer', 100, 2)} % |",
              f"| onnxruntime int8 ({int8['method']}) | model.int8.onnx | {int8['bytes'] / 1e6:.2f} MB | "
              f"{int8['latency_ms']:g} ms | {with_interval(tested['int8'], 'eer', 100, 2)} % |", "",
              f"EER in % with its 95 % interval (speaker bootstrap) on the {tested['test_set']} "
              f"({tested['trials']:,} {'trials' if task == 'sv' else 'utterances'}), each graph scored as "
              "`python -m hp` scores.", "",
              "## Structure kept", ""] + structure_table(inputs.task_json) + ["",
              "## Results", "",
              "| scored on | scoring | EER (%) | " + " | ".join(k for k in metric_keys(task)) + " |",
              "|---|---|---|" + "---|" * len(metric_keys(task))]
    for name, scoring, m in results(inputs):
        lines.append(f"| {name} | {scoring} | {with_interval(m, 'eer', 100, 2)} | "
                     + " | ".join(with_interval(m, k) if k in m else "" for k in metric_keys(task)) + " |")
    lines += ["", "95 % intervals in brackets: bootstrap over speakers (hp.evaluation.bootstrap)."
              + (" minDCF near 1 means the system does no better than rejecting every trial at that low target "
                 "prior: expected of a toy model." if task == "sv" else ""), ""]
    training, data = inputs.training, inputs.data
    lines += ["## Training", "",
              f"- Data: the {inputs.corpus} corpus; {training['utterances']:,} training utterances"
              + (f" of {training['classes']} speakers" if task == "sv" else "")
              + "; evaluation: " + ", ".join(f"{v:,} {k}" for k, v in data.items()
                                             if isinstance(v, int) and k != "train") + ".",
              f"- {training['steps']:,} steps on {training['hardware']['device']} ({training['processes']} "
              f"process{'es' if training['processes'] != 1 else ''}), {training['train_seconds'] / 60:.1f} min.",
              f"- Target sparsity {scored['target_sparsity']} ({scored['target_measure']}), achieved "
              f"{scored['achieved_sparsity']:.4f}.", "",
              "<details><summary>Every fine-tuning setting (params.yaml finetune." + task + ")</summary>", "",
              "```yaml", yaml.safe_dump(inputs.settings, sort_keys=False).strip(), "```", "</details>", "",
              "## Intended use and limits", ""]
    if toy:
        lines.append("A demonstration of hp's pipeline only.")
    elif task == "sv":
        lines.append("Research on speaker verification of 16 kHz speech like VoxCeleb's (interviews, mostly "
                     "English). The threshold in scoring.json is fitted on the test list itself: set your own on "
                     "held-out data of your conditions. Not for forensic or access-control decisions on its own.")
    else:
        lines.append("Research on spoofing detection of 16 kHz speech in ASVspoof5's conditions. Attacks and "
                     "codecs unseen in training degrade it (the report breaks the EER down by attack). Not a "
                     "security control on its own.")
    lines += ["", "## Licence", "", licence(inputs.source)[1] + ".", "", "## Files", "",
              "model.safetensors + task.json (PyTorch weights and the kept structure), model.onnx (fp32), "
              "model.int8.onnx, scoring.json (thresholds; SV's mean embedding, CM's calibration), this README.md, "
              "and SHA256SUMS (`sha256sum -c SHA256SUMS`; hp refuses a folder whose files differ from it).", "",
              "## How to use", ""] + usage(task)
    return "\n".join(lines) + "\n"


def metric_keys(task: str) -> tuple[str, ...]:
    return ("min_dcf_0.01", "min_dcf_0.05") if task == "sv" else ("min_dcf", "act_dcf", "cllr")
