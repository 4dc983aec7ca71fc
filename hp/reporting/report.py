"""reports/report.md and the self-contained reports/report.html: run summary, metrics tables, the cost of
compaction (dense vs compact), DET curves, score histograms, training curves and the pruned architectures."""
from __future__ import annotations

from pathlib import Path

import yaml

from hp.reporting.cells import CORPUS_NAMES
from hp.reporting.cm_section import cm_section
from hp.reporting.document import Document
from hp.reporting.figures import architecture_figure, det_figure, training_figure
from hp.reporting.outputs import TaskOutputs
from hp.reporting.summary import changed_params, cost_section, run_section
from hp.reporting.sv_section import sv_section
from hp.training.provenance import is_hp_pretrained, pretraining_summary
from hp.utils.files import atomic_dir


def _structure_bullets(models: dict[str, dict]) -> list[str]:
    out = []
    for t, m in models.items():
        s = m["structure"]
        att = sum(bool(l["heads"]) for l in s["layers"])
        ffn = sum(l["ffn_dim"] > 0 for l in s["layers"])
        out.append(f"{t}: CNN channels {s['conv_channels']}; attention blocks kept {att}/{len(s['layers'])}, heads "
                   f"per layer {[len(l['heads']) for l in s['layers']]}; FFN blocks kept {ffn}/{len(s['layers'])}, "
                   f"units per layer {[l['ffn_dim'] for l in s['layers']]}")
    return out


def write_report(tasks: list[str], params: dict, root: Path, out: Path, code: dict,
                 baseline: dict | None = None) -> Document:
    """Read every task's outputs under `root` (the workspace) and write out/report.md, out/report.html and
    out/figures/. `code`: hp.version.code_version(); `baseline`: the committed params.yaml to list changes
    against (None: unknown)."""
    figures = out / "figures"
    outs = {t: TaskOutputs.read(root, t) for t in tasks}
    pretrained = {t: params["model"]["pretrained"][t] for t in tasks}
    corpora = {t: params["prepare"][t]["corpus"] for t in tasks}
    doc = Document("hp report")
    tiny = [t for t in tasks if pretrained[t] == "tiny"]
    if tiny:
        on = ", ".join(f"{t} on the {CORPUS_NAMES.get(corpora[t], corpora[t])}" for t in tiny)
        doc.note(f"**Smoke run ({on}).** The front end is `tiny`, a small WavLM-shaped model with *random* weights. "
                 "The numbers show that the pipeline works end to end; they say nothing about WavLM's accuracy.")
    own = [t for t in tasks if is_hp_pretrained(root / pretrained[t])]
    if own:
        doc.note(f"**Toy scale ({', '.join(own)}).** The front end is hp's own tiny WavLM, pretrained by masked "
                 "prediction on unlabeled synthetic speech (`python -m stages.pretrain`, metrics/pretrain.json). "
                 "The numbers show the method at work on a pretrained model; they say nothing about WavLM's accuracy. "
                 + " ".join(pretraining_summary(root / p, p) for p in sorted({pretrained[t] for t in own})))
    run_section(doc, outs, pretrained, corpora, code, None if baseline is None else changed_params(params, baseline))
    cost_section(doc, outs)
    for t, o in outs.items():  # each task's own section: SV's trial lists, CM's splits and attacks
        section = {"sv": sv_section, "cm": cm_section}[t]
        section(doc, o.scored, corpora[t], figures, o.scores, o.model["frontend"])
    doc.heading("DET curves")
    det_figure({t: o.det for t, o in outs.items()}, figures / "det.png")
    doc.figure(figures / "det.png", "DET curves")
    doc.paragraph("; ".join(f"{t}: {o.scored['det']}" for t, o in outs.items() if "det" in o.scored) + ".")
    doc.heading("Training")
    training_figure({t: o.curves for t, o in outs.items()}, figures / "training.png")
    doc.figure(figures / "training.png", "training curves: task loss, expected / deterministic / target sparsity, "
                                         "Lagrange multipliers, learning rate")
    doc.heading("Pruned architecture")
    models = {t: o.model for t, o in outs.items()}
    architecture_figure(models, figures / "architecture.png")
    doc.figure(figures / "architecture.png", "kept structure per layer, " + " and ".join(tasks) + " side by side")
    doc.bullets(_structure_bullets(models))
    for t, o in outs.items():
        doc.details(f"Model card of {t} (models/{t}/export/README.md, also cards/{t}.md)", o.card)
    doc.details("All parameters of this run (params.yaml)", yaml.safe_dump(params, sort_keys=False))
    write_cards({t: o.card for t, o in outs.items()}, out / "cards")
    doc.write(out / "report.md", out / "report.html")
    return doc


def write_cards(cards: dict[str, str], out: Path) -> None:
    """Each task's model card as <task>.md: the released folders live in DVC's cache, their cards in git."""
    with atomic_dir(out) as tmp:
        for task, card in cards.items():
            (tmp / f"{task}.md").write_text(card)
