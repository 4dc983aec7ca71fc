"""The report's writers: one document as Markdown (figures linked) and as self-contained HTML (figures inline,
nothing fetched); params compared with the committed ones."""
import base64
import re

import pytest

from hp.reporting.document import Document
from hp.reporting.summary import ABSENT, changed_params, flatten

# a figure drawn from NaNs (a histogram density of no scores: 0/0) warns; here that fails the test
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture
def document(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(PNG)
    doc = Document("Title <1>")
    doc.note("**Smoke run.** random *weights*")
    doc.heading("Numbers & such")
    doc.table(["task", "EER (%)"], [["sv", "1.50"], ["cm", "–"]], caption="Per `task`:")
    doc.figure(tmp_path / "figures" / "a.png", "a figure")
    doc.bullets(["one", "two <b>", "see [the card](cards/sv.md)"])
    doc.details("All params", "a: 1\nb: [2, 3]\n")
    return doc


def test_markdown(document, tmp_path):
    document.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# Title <1>\n\n> **Smoke run.** random *weights*\n\n## Numbers & such\n")
    assert "Per `task`:\n\n| task | EER (%) |\n|---|---|\n| sv | 1.50 |\n| cm | – |\n" in md
    assert "![a figure](figures/a.png)" in md and "- two <b>" in md and "- see [the card](cards/sv.md)" in md
    assert "All params:\n\n```\na: 1\nb: [2, 3]\n```" in md


def test_html_is_self_contained(document, tmp_path):
    document.write(tmp_path / "r.md", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert re.findall(r'src="([^"]*)"', page) == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    assert not re.search(r"https?://", page) and "<script" not in page and "<link" not in page
    assert "<title>Title &lt;1&gt;</title>" in page and "two &lt;b&gt;" in page  # text is escaped
    assert "<blockquote><strong>Smoke run.</strong> random <em>weights</em></blockquote>" in page
    assert '<td class="num">1.50</td>' in page and "<td>sv</td>" in page and "<code>task</code>" in page
    assert "<details><summary>All params</summary><pre>a: 1\nb: [2, 3]\n</pre></details>" in page
    assert '<li>see <a href="cards/sv.md">the card</a></li>' in page


@pytest.mark.parametrize("text,expected", [
    ("see [the card](cards/sv.md)", 'see <a href="cards/sv.md">the card</a>'),
    ("**[a](b.md)** and [f(x)](a.md)", '<strong><a href="b.md">a</a></strong> and <a href="a.md">f(x)</a>'),
    ("[page](https://en.wikipedia.org/wiki/Foo_(bar))", '<a href="https://en.wikipedia.org/wiki/Foo_(bar)">page</a>'),
    ("`[a](b)` and `*x*`", "<code>[a](b)</code> and <code>*x*</code>"),  # a code span is only code
    ("[a](x*y*z.md)", '<a href="x*y*z.md">a</a>'),  # nor is a target markup
    ("[a](`b`)", "[a](<code>b</code>)"),
    ("[`hp`](a&b.md)", '<a href="a&amp;b.md"><code>hp</code></a>'),
    ("[x](javascript:alert(1))", "[x](javascript:alert(1))"),  # only relative and http(s) targets link
])
def test_inline_markup_in_html(text, expected):
    doc = Document("t")
    doc.paragraph(text)
    assert f"<p>{expected}</p>" in doc.html()


def test_table_rows_must_fit_the_header():
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        Document("t").table(["a", "b"], [["1"]])


def test_changed_params():
    base = {"target_sparsity": 0.7, "finetune": {"sv": {"lr": 1e-3, "head": {"heads": 8}}}, "old": 1}
    now = {"target_sparsity": 0.5, "finetune": {"sv": {"lr": 1e-3, "head": {"heads": 4}}}, "new": [1, 2]}
    assert flatten(now) == {"target_sparsity": 0.5, "finetune.sv.lr": 1e-3, "finetune.sv.head.heads": 4,
                            "new": [1, 2]}
    assert changed_params(now, base) == [("finetune.sv.head.heads", 8, 4), ("new", ABSENT, [1, 2]),
                                         ("old", 1, ABSENT), ("target_sparsity", 0.7, 0.5)]
    assert changed_params(base, base) == []


def test_code_version_ignores_the_callers_outputs(tmp_path):
    import subprocess

    from hp.version import code_version

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "r.md").write_text("old")
    (tmp_path / "params.yaml").write_text("a: 1")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "x")
    (tmp_path / "reports" / "r.md").unlink()  # DVC removes a stage's outputs before running it
    clean = code_version(tmp_path, ignore=("reports",))["git"]
    assert re.fullmatch(r"[0-9a-f]{7,}", clean) and code_version(tmp_path)["git"] == clean + "-dirty"
    (tmp_path / "params.yaml").write_text("a: 2")
    assert code_version(tmp_path, ignore=("reports",))["git"] == clean + "-dirty"
    assert code_version(tmp_path.parent / "not-a-repo-xyz")["git"] is None


def sv_result(target: float) -> dict:
    lists = {name: {"trials": 100, **{k: {"eer": 0.01 * (i + 1), "min_dcf_0.01": 0.1, "min_dcf_0.05": 0.05}
                                      for k in ("cosine", "asnorm")}} for i, name in enumerate("OEH")}
    return {"target_sparsity": target, "lists": lists, "asnorm_top_n": 300, "qmf_trials": None}


def sv_scores():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({"list": "O", "label": rng.integers(0, 2, 50), "score_cosine": rng.normal(size=50),
                         "score_asnorm": rng.normal(size=50)})


@pytest.mark.parametrize("corpus,shape,shown", [("voxceleb", "base-plus", True), ("voxceleb", "large", True),
                                                ("mini", "base-plus", False), ("voxceleb", "tiny", False)])
def test_sv_section_sets_the_authors_numbers_beside_ours_on_their_data(tmp_path, corpus, shape, shown):
    """On VoxCeleb with a Base+ or Large front end the SV section shows their EER per list at their ratio nearest
    the target (0.68 -> 70%), labelled as theirs; on the mini corpus or another shape, nothing of the kind."""
    from hp.model.config import SHAPES
    from hp.reporting import published
    from hp.reporting.sv_section import sv_section as _sv

    doc = Document("t")
    _sv(doc, sv_result(0.68), corpus, tmp_path, sv_scores(), SHAPES[shape].to_dict())
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert ("theirs at 70%" in md) == shown and ("plt_vox3.py" in md) == shown
    if shown:
        o, h = published.SV_EER[shape]["O"][7], published.SV_EER[shape]["H"][7]
        assert f"| Vox1-O | 1.00 | 1.00 | {o:.3f} |" in md and f"| Vox1-H | 3.00 | 3.00 | {h:.3f} |" in md
        assert f"{published.SV_PARAMS_M[shape][7]:.2f}M parameters" in md


@pytest.mark.parametrize("corpus,shown", [("asvspoof5", True), ("mini", False), ("asvspoof2019la", False)])
def test_cm_section_sets_the_authors_numbers_beside_ours_on_asvspoof5(tmp_path, corpus, shown):
    import numpy as np
    import pandas as pd

    from hp.model.config import SHAPES
    from hp.reporting.cm_section import cm_section as _cm

    split = {"bonafide": 10, "spoof": 30, "eer": 0.05, "min_dcf": 0.2, "act_dcf": 0.3, "cllr": 0.4,
             "raw": {"act_dcf": 0.5, "cllr": 0.6}, "attacks": {}, "codecs": {}}
    r = {"target_sparsity": 0.3, "dev": split, "eval": split}
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"split": ["dev", "eval"] * 20, "label": ["bonafide", "spoof"] * 20,
                           "score_llr": rng.normal(size=40)})
    doc = Document("t")
    _cm(doc, r, corpus, tmp_path, scores, SHAPES["base-plus"].to_dict())  # WavLM Base has Base+'s shape
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert ("theirs at 30%" in md) == shown
    if shown:  # their plot at 30%: dev 3.463, eval 5.657; their README's single system beside
        assert "| dev | 5.00 | 0.2000 | 3.463 | 1.547 | 0.0395 |" in md
        assert "| eval | 5.00 | 0.2000 | 5.657 | 3.758 | 0.1028 |" in md


def test_anchor_shapes_and_ratios():
    from hp.model.config import SHAPES
    from hp.reporting import published

    hub_base_plus = {**SHAPES["base-plus"].to_dict(), "layerdrop": 0.05, "hidden_dropout": 0.1}
    assert published.shape_of(hub_base_plus) == "base-plus" and published.shape_of(SHAPES["large"].to_dict()) == "large"
    assert published.shape_of(SHAPES["tiny"].to_dict()) is None
    assert [published.nearest_ratio(t) for t in (0.0, 0.04, 0.05, 0.66, 0.7, 0.99)] == [0.0, 0.0, 0.0, 0.7, 0.7, 0.9]
    assert published.cm_anchor(0.6, ["dev", "eval"]).eer == {"eval": 11.456}  # their plot has no dev point at 60%
    assert published.sv_anchor(SHAPES["tiny"].to_dict(), 0.7, ["O"]) is None


@pytest.mark.parametrize("with_baseline", [True, False])
def test_sv_section_shows_the_ltas_baseline_when_scored(tmp_path, with_baseline):
    """The training-free reference row sits in the per-list table (Markdown and HTML alike), labelled as a
    baseline, with a note of what it is; metrics without it give no such row."""
    from hp.evaluation import baselines
    from hp.model.config import SHAPES
    from hp.reporting.sv_section import BASELINE_LTAS, sv_section as _sv

    r = sv_result(0.3)
    if with_baseline:
        r["baseline_ltas"] = {name: {"eer": 0.2 + 0.1 * i, "min_dcf_0.01": 0.9, "min_dcf_0.05": 0.8}
                              for i, name in enumerate("OEH")}
    doc = Document("t")
    _sv(doc, r, "voxceleb", tmp_path, sv_scores(), SHAPES["tiny"].to_dict())
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    md, page = (tmp_path / "r.md").read_text(), (tmp_path / "r.html").read_text()
    assert (f"| Vox1-O | {BASELINE_LTAS} | 100 | 20.00 | 0.9000 | 0.8000 |" in md) == with_baseline
    assert (f"| Vox1-H | {BASELINE_LTAS} | 100 | 40.00 | 0.9000 | 0.8000 |" in md) == with_baseline
    assert (BASELINE_LTAS in page) == (md.count(BASELINE_LTAS) == 4) == with_baseline  # 3 rows + the note
    assert ("no training" in page) == with_baseline
    assert ("at most " f"{baselines.MEAN_UTTERANCES:,}" in md) == with_baseline  # the note's count is the code's
    assert "| Vox1-O | cosine | 100 | 1.00 |" in md


def test_a_dense_run_beside_a_pruned_one(tmp_path):
    """target_sparsity 0 fine-tunes without gates: no sparsity or multiplier curves, finetune.json's `gates`
    false. The summary says so instead of a freezing step; the training figure draws the pruned task's curves
    and marks the dense one's panels."""
    import pandas as pd

    from hp.reporting.figures import training_figure
    from hp.reporting.outputs import TaskOutputs
    from hp.reporting.summary import run_section

    steps = pd.DataFrame({"step": range(3), "task_loss": [3.0, 2.0, 1.0], "lr": [1e-3] * 3})
    gated = steps.assign(expected_sparsity=0.1, deterministic_sparsity=0.1, target_sparsity=0.2, lambda1=0.0,
                         lambda2=10.0)
    training_figure({"sv": steps, "cm": gated}, tmp_path / "training.png")
    assert (tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"
    machine = {"device": "cpu", "cpu": "x", "cores": 2, "torch_threads": 1, "gpu": None}

    def outputs(target, gates, frozen):
        trained = {"steps": 3, "train_seconds": 1.0, "processes": 1, "gates_frozen_at_step": frozen,
                   "hardware": machine, "classes": 2, **({} if gates is None else {"gates": gates})}
        data = {"train": 8, "dev": 4, "eval": 4, "test": 4, "trials_per_list": {"O": 6}}
        return TaskOutputs({"target_sparsity": target, "achieved_sparsity": target}, trained,
                           {"hardware": machine}, "", {}, data, None, None, None)

    doc = Document("t")
    outs = {"cm": outputs(0.0, False, None), "sv": outputs(0.7, None, 2)}  # sv: a finetune.json from before
    run_section(doc, outs, {"cm": "tiny", "sv": "tiny"}, {"cm": "mini", "sv": "mini"}, {}, [])
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert ("| sparsity (target / achieved, in target_measure) | 0.000 / 0.0000 (params) | 0.700 / 0.7000 (params) |"
            in md)
    assert "| front-end sparsity: params / MACs | 0.0000 / not recorded | 0.7000 / not recorded |" in md
    assert "dense fine-tuning, no gates" in md and "gates frozen at step 2" in md


def test_cm_section_marks_unseen_attacks_and_reports_them_pooled(tmp_path):
    """The per-attack table says which attacks training never saw; a table of its own gives each split's EER
    on those attacks pooled (bona fide against all unseen spoofs), labelled as such. Metrics from before the
    marking (no `unseen`) give '–' and no pooled table; a split whose attacks were all seen gives no row."""
    import numpy as np
    import pandas as pd

    from hp.model.config import SHAPES
    from hp.reporting.cm_section import cm_section as _cm

    def group(eer, **extra):
        return {"eer": eer, "min_dcf": 0.2, "act_dcf": 0.3, "cllr": 0.4, **extra}

    def split(attacks, unseen):
        return {"bonafide": 36, "spoof": 36, **group(0.1), "raw": {"act_dcf": 0.5, "cllr": 0.6},
                "attacks": attacks, "codecs": {"-": {"bonafide": 24, "spoof": 24, **group(0.05)}},
                **({} if unseen is None else {"unseen": unseen})}

    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"split": ["dev", "eval"] * 20, "label": ["bonafide", "spoof"] * 20,
                           "score_llr": rng.normal(size=40)})
    seen = {"A01": {"spoofs": 9, **group(0.0, unseen=False)}, "A02": {"spoofs": 9, **group(0.01, unseen=False)}}
    r = {"target_sparsity": 0.7,
         "dev": split(seen, {"attacks": [], "bonafide": 36, "spoofs": 0}),
         "eval": split({**seen, "A17": {"spoofs": 9, **group(0.25, unseen=True)},
                        "A18": {"spoofs": 9, **group(0.4, unseen=True)}},
                       {"attacks": ["A17", "A18"], "bonafide": 36, "spoofs": 18, **group(0.3125)})}
    doc = Document("t")
    _cm(doc, r, "mini", tmp_path, scores, SHAPES["tiny"].to_dict())
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert "| split | attack | spoofs | in training | EER (%) |" in md
    assert "| dev | A01 | 9 | seen | 0.00 |" in md and "| eval | A02 | 9 | seen | 1.00 |" in md
    assert "| eval | A17 | 9 | unseen | 25.00 |" in md and "| eval | A18 | 9 | unseen | 40.00 |" in md
    assert "Attacks unseen in training, pooled" in md
    assert "| split | unseen attacks | bona fide | spoof | EER (%) |" in md
    assert "| eval | A17, A18 | 36 | 18 | 31.25 | 0.2000 | 0.3000 | 0.4000 |" in md
    pooled = md.split("| split | unseen attacks |")[1].split("\n\n")[0]
    assert "| eval |" in pooled and "| dev |" not in pooled  # dev: no unseen spoof, no row

    for s in ("dev", "eval"):  # metrics written before attacks were marked
        r[s].pop("unseen")
        for m in r[s]["attacks"].values():
            m.pop("unseen", None)  # (dev and eval share A01's and A02's)
    doc = Document("t")
    _cm(doc, r, "mini", tmp_path, scores, SHAPES["tiny"].to_dict())
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert "| eval | A17 | 9 | – | 25.00 |" in md and "unseen attacks" not in md and "Attacks unseen" not in md


def test_summary_gives_the_last_loss_beside_its_chance_value(tmp_path):
    from hp.reporting.outputs import TaskOutputs
    from hp.reporting.summary import run_section

    machine = {"device": "cpu", "cpu": "x", "cores": 2, "torch_threads": 1, "gpu": None}
    data = {"train": 8, "dev": 4, "eval": 4, "test": 4, "trials_per_list": {"O": 6}}

    def outputs(**loss):
        trained = {"steps": 3, "train_seconds": 1.0, "processes": 1, "gates_frozen_at_step": 2,
                   "hardware": machine, "classes": 2, **loss}
        return TaskOutputs({"target_sparsity": 0.7, "achieved_sparsity": 0.7}, trained, {"hardware": machine},
                           "", {}, data, None, None, None)

    doc = Document("t")
    outs = {"sv": outputs(final_task_loss=2.5, chance_task_loss=9.4897), "cm": outputs()}  # cm: an older run
    run_section(doc, outs, {"sv": "tiny", "cm": "tiny"}, {"sv": "mini", "cm": "mini"}, {}, [])
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    assert "| task loss: last step / chance | 2.500 / 9.490 | not recorded |" in (tmp_path / "r.md").read_text()


def test_a_front_end_pretrained_by_hp_is_told_by_its_provenance_file(tmp_path):
    """What write_report's toy-scale banner keys on (the e2e test reads the banner itself)."""
    from hp.training.provenance import PROVENANCE, is_hp_pretrained

    (tmp_path / "own").mkdir()
    (tmp_path / "own" / PROVENANCE).write_text("{}")
    assert is_hp_pretrained(tmp_path / "own")
    assert not is_hp_pretrained(tmp_path / "microsoft/wavlm-base-plus") and not is_hp_pretrained(tmp_path)


@pytest.mark.parametrize("tolerance,achieved,mark", [
    (0.01, 0.71, None),  # exactly the tolerance away: within it
    (None, 0.705, None),
    (None, 0.878, "misses the target by +0.1780** (tolerance 0.01; the check was off)"),
    (0.2, 0.6, None),
    (0.05, 0.6, "misses the target by -0.1000** (tolerance 0.05)"),  # as a run recorded before the check failed
])
def test_the_report_marks_a_run_outside_its_sparsity_tolerance(tolerance, achieved, mark):
    from hp.reporting.summary import _sparsity

    text = _sparsity({"target_sparsity": 0.7, "achieved_sparsity": achieved, "sparsity_tolerance": tolerance})
    assert text.startswith(f"0.700 / {achieved:.4f}") and (mark in text if mark else "misses" not in text)


def test_the_report_gives_both_measures_of_a_run():
    from hp.reporting.summary import _measures, _sparsity

    scored = {"target_sparsity": 0.7, "target_measure": "macs", "achieved_sparsity": 0.705, "sparsity_tolerance": 0.01,
              "params_sparsity": 0.4321, "macs_sparsity": 0.705, "macs_reference_seconds": 4.0}
    assert _sparsity(scored) == "0.700 / 0.7050 (macs)"
    assert _measures(scored) == "0.4321 / 0.7050 (4 s utterance)"
