"""The report's sections over all tasks side by side: the run (front end, data, sparsity, training, hardware, the
parameters changed from the committed ones) and the cost of compaction (dense vs compact)."""
from __future__ import annotations

import json

from hp.data.manifest import shrunk_lists
from hp.params import REPORT_TOLERANCE, misses_target
from hp.reporting.cells import CORPUS_NAMES, ci
from hp.reporting.document import Document
from hp.reporting.outputs import TaskOutputs

LATENCIES = {"torch_cpu": "PyTorch CPU", "onnxruntime_cpu": "onnxruntime CPU", "torch_cuda": "PyTorch CUDA"}


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a.b.c": leaf}; lists are leaves."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return out


ABSENT = object()  # a param one side does not have


def changed_params(params: dict, baseline: dict) -> list[tuple[str, object, object]]:
    """(key, baseline value, this run's value) of every param that differs; ABSENT where a side lacks it."""
    now, before = flatten(params), flatten(baseline)
    return [(key, before.get(key, ABSENT), now.get(key, ABSENT)) for key in sorted(now.keys() | before.keys())
            if now.get(key, ABSENT) != before.get(key, ABSENT)]


def _hardware(h: dict) -> str:
    where = h.get("gpu") if h.get("device", "cuda" if h.get("gpu") else "cpu") == "cuda" else None
    threads = h["torch_threads"]
    cpu = f"{h['cpu']}, {h['cores']} cores, {threads} torch thread{'s' * (threads != 1)}"
    return f"{where} ({cpu})" if where else cpu


def _data(task: str, corpus: str, out: TaskOutputs) -> str:
    """One line on the task's data: manifests' summary.json counts, training classes, the corpus's name."""
    describe = {"sv": sv_data, "cm": cm_data}[task]
    return describe(out.data, out.finetune["classes"], CORPUS_NAMES.get(corpus, corpus))


def sv_data(d: dict, classes: int, shown: str) -> str:
    lists = ", ".join(f"{name} {n:,}" for name, n in d["trials_per_list"].items())
    return (f"{shown}: {d['train']:,} training utterances of {classes} speakers; "
            f"{d['test']:,} test utterances, trials {lists}{_shrunk(d)}")


def cm_data(d: dict, classes: int, shown: str) -> str:
    return f"{shown}: train {d['train']:,}, dev {d['dev']:,}, eval {d['eval']:,} utterances{_shrunk(d)}"


def _shrunk(d: dict) -> str:
    """A mark for official lists that manifests.drop_invalid shrank: their numbers are not the official lists'."""
    lines = shrunk_lists(d.get("kept", {}))  # runs from before summary.json counted them have none
    return f" — **not the official lists** (drop_invalid): {'; '.join(lines)}" if lines else ""


def _loss(finetune: dict) -> str:
    """The last step's task loss beside the loss of a model that learned nothing (e.g. an AAM head whose
    embeddings are orthogonal to every class): a run that ends at its chance value learned nothing."""
    if finetune.get("final_task_loss") is None:
        return "not recorded"
    return f"{finetune['final_task_loss']:.3f} / {finetune['chance_task_loss']:.3f}"


def _sparsity(scored: dict) -> str:
    """Target / achieved, and a mark when the run missed its target by more than its tolerance (a run with the
    check off, sparsity_tolerance null, is held to REPORT_TOLERANCE)."""
    target, achieved = scored["target_sparsity"], scored["achieved_sparsity"]
    tolerance = scored.get("sparsity_tolerance")  # absent in runs from before the check
    text = f"{target:.3f} / {achieved:.4f} ({scored.get('target_measure', 'params')})"
    if misses_target(target, achieved, tolerance):
        held = f"{tolerance:g}" if tolerance is not None else f"{REPORT_TOLERANCE:g}; the check was off"
        text += f" — **misses the target by {achieved - target:+.4f}** (tolerance {held})"
    return text


def _measures(scored: dict) -> str:
    """The compact front end's sparsity in both measures (runs from before the MAC target recorded params only)."""
    if "macs_sparsity" not in scored:
        return f"{scored['achieved_sparsity']:.4f} / not recorded"
    return (f"{scored['params_sparsity']:.4f} / {scored['macs_sparsity']:.4f} "
            f"({scored['macs_reference_seconds']:g} s utterance)")


def run_section(doc: Document, outs: dict[str, TaskOutputs], pretrained: dict, corpora: dict, code: dict,
             changed: list | None) -> None:
    doc.heading("Run")
    tasks = list(outs)
    rows = [["front end", *(f"`{pretrained[t]}`" for t in tasks)],
            ["data", *(_data(t, corpora[t], outs[t]) for t in tasks)],
            ["sparsity (target / achieved, in target_measure)", *(_sparsity(o.scored) for o in outs.values())],
            ["front-end sparsity: params / MACs", *(_measures(o.scored) for o in outs.values())],
            ["training", *(f"{o.finetune['steps']:,} steps in {o.finetune['train_seconds']:,} s on "
                           f"{o.finetune['processes']} process{'es' * (o.finetune['processes'] != 1)}; "
                           + (f"gates frozen at step {o.finetune['gates_frozen_at_step']}"
                              if o.finetune.get("gates", True) else "dense fine-tuning, no gates")
                           for o in outs.values())],
            ["task loss: last step / chance", *(_loss(o.finetune) for o in outs.values())],
            ["training hardware", *(_hardware(o.finetune["hardware"]) if "hardware" in o.finetune else "not recorded"
                                    for o in outs.values())],
            ["timing hardware", *(_hardware(o.export["hardware"]) for o in outs.values())]]
    doc.table(["", *tasks], rows)
    git = code.get("git") or "not a git checkout"
    doc.paragraph(f"Report written by hp {code.get('hp')}, source digest `{code.get('source')}`, git `{git}`.")
    if changed is None:
        doc.paragraph("Parameters: no baseline params.yaml to compare with (not a git checkout); all are listed below.")
    elif not changed:
        doc.paragraph("Parameters: the committed defaults (params.yaml at git HEAD), none changed.")
    else:
        doc.table(["parameter", "committed (git HEAD)", "this run"],
                  [[f"`{k}`", *("(absent)" if v is ABSENT else f"`{json.dumps(v)}`" for v in (a, b))]
                   for k, a, b in changed],
                  caption="Parameters that differ from params.yaml at git HEAD when the report was written:")


def cost_section(doc: Document, outs: dict[str, TaskOutputs]) -> None:
    doc.heading("Dense vs compact")
    kinds = [k for k in LATENCIES if any(k in o.export[m]["latency_ms"] for o in outs.values()
                                         for m in ("dense", "compact"))]
    rows = []
    for task, o in outs.items():
        for name in ("dense", "compact"):
            m = o.export[name]
            rows.append([task, name, f"{m['params']:,}", f"{m['params_inference']:,}", f"{m['macs'] / 1e6:,.1f}",
                         *(f"{m['latency_ms'][k]:.2f}" if k in m["latency_ms"] else "–" for k in kinds)])
    seconds = next(iter(outs.values())).export["input"]["seconds"]
    doc.table(["task", "model", "params (front end)", "params (inference)", f"MMACs ({seconds:g} s)",
               *(f"{LATENCIES[k]} (ms)" for k in kinds)], rows,
              caption=f"One {seconds:g}-second utterance, batch 1, float32; latency is the median of timed runs "
                      "(the dense model is the unpruned front end of the same shape with the same back-end). "
                      "Inference parameters: front end and back-end (CM: and the classifier that gives the "
                      "score; SV's training-only AAM head is left out). onnxruntime runs the exported compact "
                      "graph.")
    release_section(doc, outs)
    doc.bullets([f"{t}: ONNX export (`models/{t}/export/model.onnx`, {o.export['onnx']['bytes'] / 2**20:.1f} MiB) "
                 "matches PyTorch to " + ", ".join(f"{name} {p['abs']:.1e} (scaled {p['scaled']:.1e})"
                                                   for name, p in o.export["onnx"]["parity"].items())
                 + f" on random utterances of {o.export['onnx']['parity_seconds']} s" for t, o in outs.items()])


def release_section(doc: Document, outs: dict[str, TaskOutputs]) -> None:
    """fp32 vs int8 ONNX side by side (size, latency, test-set EER with its interval) and where each model card is."""
    rows = []
    for task, o in outs.items():
        e, tested = o.export, o.export["test_set"]
        for name, size, ms in (("fp32", e["onnx"]["bytes"], e["compact"]["latency_ms"]["onnxruntime_cpu"]),
                               (f"int8 ({e['int8']['method']})", e["int8"]["bytes"], e["int8"]["latency_ms"])):
            rows.append([task, name, f"{size / 2**20:.2f}", f"{ms:.2f}", tested["test_set"],
                         ci(tested[name.split()[0]], "eer")])
    doc.table(["task", "ONNX graph", "MiB", "latency (ms)", "scored on", "EER % [95 % interval]"], rows,
              caption="The released graphs (models/<task>/export), each scored on the test set as `python -m hp` "
                      "scores (SV: cosine after scoring.json's mean; CM: the calibrated LLRs); latency as above, "
                      "onnxruntime on CPU.")
    doc.paragraph("Model cards (the released folders' README.md): "
                  + ", ".join(f"[{t}](cards/{t}.md)" for t in outs) + "; shown in full at the end.")
