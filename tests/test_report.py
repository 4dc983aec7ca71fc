"""The report's writers: one document as Markdown (figures linked) and as self-contained HTML (figures inline,
nothing fetched); params compared with the committed ones."""
import base64
import re

import pytest

from hp.document import Document
from hp.report import ABSENT, changed_params, flatten

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
    doc.bullets(["one", "two <b>"])
    doc.details("All params", "a: 1\nb: [2, 3]\n")
    return doc


def test_markdown(document, tmp_path):
    document.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert md.startswith("# Title <1>\n\n> **Smoke run.** random *weights*\n\n## Numbers & such\n")
    assert "Per `task`:\n\n| task | EER (%) |\n|---|---|\n| sv | 1.50 |\n| cm | – |\n" in md
    assert "![a figure](figures/a.png)" in md and "- two <b>" in md
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
    from hp import anchors
    from hp.model.config import SHAPES
    from hp.report import _sv

    doc = Document("t")
    _sv(doc, sv_result(0.68), corpus, tmp_path, sv_scores(), SHAPES[shape].to_dict())
    doc.write(tmp_path / "r.md", tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text()
    assert ("theirs at 70%" in md) == shown and ("plt_vox3.py" in md) == shown
    if shown:
        o, h = anchors.SV_EER[shape]["O"][7], anchors.SV_EER[shape]["H"][7]
        assert f"| Vox1-O | 1.00 | 1.00 | {o:.3f} |" in md and f"| Vox1-H | 3.00 | 3.00 | {h:.3f} |" in md
        assert f"{anchors.SV_PARAMS_M[shape][7]:.2f}M parameters" in md


@pytest.mark.parametrize("corpus,shown", [("asvspoof5", True), ("mini", False), ("asvspoof2019la", False)])
def test_cm_section_sets_the_authors_numbers_beside_ours_on_asvspoof5(tmp_path, corpus, shown):
    import numpy as np
    import pandas as pd

    from hp.model.config import SHAPES
    from hp.report import _cm

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
    from hp import anchors
    from hp.model.config import SHAPES

    hub_base_plus = {**SHAPES["base-plus"].to_dict(), "layerdrop": 0.05, "hidden_dropout": 0.1}
    assert anchors.shape_of(hub_base_plus) == "base-plus" and anchors.shape_of(SHAPES["large"].to_dict()) == "large"
    assert anchors.shape_of(SHAPES["tiny"].to_dict()) is None
    assert [anchors.nearest_ratio(t) for t in (0.0, 0.04, 0.05, 0.66, 0.7, 0.99)] == [0.0, 0.0, 0.0, 0.7, 0.7, 0.9]
    assert anchors.cm_anchor(0.6, ["dev", "eval"]).eer == {"eval": 11.456}  # their plot has no dev point at 60%
    assert anchors.sv_anchor(SHAPES["tiny"].to_dict(), 0.7, ["O"]) is None
