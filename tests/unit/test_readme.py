"""The README's library example runs as written (with a local checkpoint in place of the hub id)."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_library_example_runs(tiny_checkpoint, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    path, _ = tiny_checkpoint
    code = blocks[0].replace('"microsoft/wavlm-base-plus"', repr(str(path)))
    assert code != blocks[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "wavlm-pruned" / "structure.json").is_file()


def test_readme_setup_is_the_two_make_commands():
    text = README.read_text()
    setup = text.split("## Set up and run", 1)[1].split("##", 1)[0]
    assert re.findall(r"```\n(.*?)```", setup, flags=re.S)[0].split("\n")[:2] == ["make repro", "make test"]
