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
