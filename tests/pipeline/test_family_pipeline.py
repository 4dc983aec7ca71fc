"""The mini CM pipeline, stage by stage, on a HuBERT and on an XLS-R-layout wav2vec 2.0 checkpoint from a local
directory (`model.pretrained.cm: <dir>`): what a user of those front ends runs, end to end."""
import json

import pytest
import torch
import transformers
import yaml

from hp.stages.compact import compact
from hp.stages.export import export
from hp.stages.finetune import finetune
from hp.stages.manifests import manifests
from hp.stages.prepare import prepare
from hp.stages.score import score
from hp.stages.warmup import warmup
from pipeline_repo import ROOT, small_params

# the CNN's 7 layers at the released strides (20 ms frames), everything else tiny
CNN = dict(conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **CNN)
CHECKPOINTS = {
    "hubert-base": (transformers.HubertConfig, transformers.HubertModel, dict(feat_extract_norm="group")),
    "xls-r": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model,
              dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)),
}


@pytest.mark.slow  # trains, scores and exports (ONNX) a model
@pytest.mark.parametrize("name", CHECKPOINTS)
def test_cm_pipeline_on_a_local_checkpoint_of_another_family(name, tmp_path, monkeypatch):
    config_cls, model_cls, layout = CHECKPOINTS[name]
    torch.manual_seed(0)
    model_cls(config_cls(**TINY, **layout)).save_pretrained(tmp_path / name)
    params = small_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    params["model"]["pretrained"]["cm"] = str(tmp_path / name)
    # a CM warm-up runs with every key SV's has but the margin's (params.yaml holds only `epochs: 0` for CM)
    params["warmup"]["cm"] = {k: v for k, v in params["warmup"]["sv"].items() if not k.startswith("margin_")}
    params["warmup"]["cm"].update(epochs=1, batch_size=4)
    params["finetune"]["cm"].update(epochs=4, warmup_epochs=1, sparsity_warmup_epochs=2)
    params["export"]["parity_seconds"] = [1.0]
    monkeypatch.chdir(tmp_path)  # the stages write relative to the working directory, as under dvc repro
    d = tmp_path / "cm"
    prepare("cm", params, d / "corpus")
    manifests("cm", params, d / "corpus", d / "manifests")
    warmup("cm", params, d / "manifests", d / "warmup", d / "live-warmup", d / "warmup.json", d / "ckpt-w")
    trained = finetune("cm", params, d / "manifests", d / "warmup", d / "finetuned", d / "live", d / "finetune.json",
                       d / "ckpt-f")
    assert trained["gates"] and trained["steps"] > 0
    small = compact(params, d / "finetuned", d / "compact", d / "compact.json")
    assert small["params_compact"] < small["params_dense"]
    scored = score("cm", params, d / "compact", d / "manifests", d / "compact.json", d / "cm.json", d / "det.csv",
                   d / "scores")
    assert 0 <= scored["eval"]["eer"] <= 1
    (d / "metrics" / "cm").mkdir(parents=True)  # the export stage reads the card's facts in dvc.yaml's layout
    (d / "cm.json").replace(d / "metrics" / "cm.json")
    (d / "finetune.json").replace(d / "metrics" / "cm" / "finetune.json")
    costs = export("cm", params, d / "compact", d / "scores", d / "manifests", d / "metrics" / "cm", d / "export")
    assert all(p["scaled"] <= params["export"]["tolerance"] for p in costs["onnx"]["parity"].values())
    task = json.loads((d / "export" / "task.json").read_text())
    assert task["frontend"]["model_type"] == config_cls.model_type
