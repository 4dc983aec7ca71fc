import os
import stat

import pytest

import hp
from hp.errors import ConfigError
from hp.utils.files import atomic_dir, atomic_path


def test_atomic_path_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("crash")
    assert sorted(p.name for p in target.iterdir()) == ["a", "b"] and (target / "a").read_text() == "1"
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("change,match", [
    (dict(num_attention_heads=0), "num_attention_heads must be a positive integer"),
    (dict(hidden_size=64, num_conv_pos_embedding_groups=5), "num_conv_pos_embedding_groups"),
    (dict(layerdrop="x"), "layerdrop must be a probability"),
    (dict(feat_extract_norm="batch"), "feat_extract_norm"),
    (dict(conv_kernel=(10, 3)), "equal length"),
])
def test_config_errors(change, match):
    with pytest.raises(ConfigError, match=match):
        hp.SHAPES["tiny"].replace(**change)


def test_structure_flags_must_agree():
    d = hp.WavLMStructure.dense(hp.SHAPES["tiny"]).to_dict()
    d["layers"][1]["use_ffn"] = False
    with pytest.raises(ConfigError, match=r"layers\[1\].use_ffn"):
        hp.WavLMStructure.from_dict(d)


def test_a_killed_writes_leftovers_go_with_the_next_write_of_its_path(tmp_path):
    """A SIGKILL between mkstemp and the rename leaves `.<name>.<random>.tmp` (or, replacing a directory,
    `.<name>.old`): the next write of that path removes them, and nobody else's."""
    (tmp_path / ".a.json.k3j_x9zq.tmp").write_text('{"half')
    (tmp_path / ".a.json.old").mkdir()
    (tmp_path / ".a.json.b.abcdefgh.tmp").write_text("another path's")  # the temp file of `a.json.b`
    (tmp_path / ".a.jsonx.abcdefgh.tmp").write_text("another path's")
    with atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.json.b.abcdefgh.tmp", ".a.jsonx.abcdefgh.tmp", "a.json"]
    (tmp_path / ".d.12345678.tmp").mkdir()
    (tmp_path / ".d.12345678.tmp" / "part").write_text("x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "whole").write_text("y")
    assert not (tmp_path / ".d.12345678.tmp").exists() and [p.name for p in (tmp_path / "d").iterdir()] == ["whole"]
