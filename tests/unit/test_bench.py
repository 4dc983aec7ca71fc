import json

import pytest
import torch

import hp
from hp.benchmarks.__main__ import main
from hp.benchmarks.compaction import draw_masks
from hp.benchmarks.loader import loader_corpus
from hp.utils.profiling import count_macs


def test_compaction_benchmark_prints_json_and_saves(tmp_path, capsys):
    main(["compaction", "--shape", "tiny", "--sparsity", "0.5", "--seconds", "1", "--repeats", "1",
                "--threads", "1", "--json", "--save", str(tmp_path / "m")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for key in ("params_dense", "params_compact", "macs_dense", "macs_compact", "latency_dense_s",
                "latency_compact_s", "max_abs_diff"):
        assert key in r
    assert r["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)  # tiny model: coarse units
    assert r["achieved_sparsity"] == pytest.approx(1 - r["params_compact"] / r["params_dense"], abs=1e-6)
    assert r["max_abs_diff"] <= 1e-4
    assert 0 < r["macs_compact"] < r["macs_dense"]
    assert r["attention_blocks"] < r["layers"] and r["ffn_blocks"] < r["layers"]  # whole blocks went too
    small = hp.load_compact(tmp_path / "m")
    assert small.num_params() == r["params_compact"]


def test_draw_masks_hits_target_and_uses_every_unit_type():
    torch.manual_seed(0)
    model = hp.Frontend(hp.SHAPES["tiny"].replace(num_hidden_layers=4, intermediate_size=512)).eval()
    draw_masks(model, 0.6, seed=1)
    assert 1 - model.deterministic_num_params() / model.dense_num_params == pytest.approx(0.6, abs=0.005)
    kinds = {name.rsplit(".", 1)[-1] + ("" if "block" not in name else name.split(".")[-2])
             for name, g in model.gates().items() if g.num_pruned() > 0}
    assert kinds == {"gate", "head_gate", "unit_gate", "block_gateattention", "block_gatefeed_forward"}


def test_mac_count_includes_attention():
    """FlopCounterMode has no formula for CPU SDPA; count_macs adds it: 2 * T^2 * D per layer (QK^T, AV)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = hp.Frontend(hp.SHAPES["tiny"], prune_units=()).eval()
    wave = torch.randn(1, 16000)
    frames = model.frame_lengths(torch.tensor(16000)).item()
    c = model.config
    with torch.inference_mode(), FlopCounterMode(display=False) as plain:
        model(wave)
    attention_macs = 2 * c.num_hidden_layers * frames * frames * c.hidden_size
    assert count_macs(model, wave) == plain.get_total_flops() // 2 + attention_macs


def test_scoring_benchmark_prints_json(capsys):
    main(["scoring", "--utterances", "200", "--trials", "3000", "--cohort", "50", "--top-n", "10",
                "--dim", "16", "--threads", "1", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert r["trials"] == 3000 and r["seconds"] > 0
    assert 0 < r["target_trials"] < 3000 and 0 <= r["eer_asnorm"] < 0.5


@pytest.mark.slow  # five training variants timed (~40 s)
def test_train_benchmark_compares_the_variants(capsys):
    main(["train", "--shape", "tiny", "--batch", "2", "--seconds", "1", "--steps", "2", "--warmup", "1",
                "--threads", "1", "--target", "0.7", "--rounds", "1", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["device"] == "cpu" and r["precision"] == "fp32" and r["gpu"] is None and r["target_sparsity"] == 0.7
    v = r["variants"]
    assert list(v) == ["hf", "dense", "pruned", "pruned_target", "pruned_target_masked"]
    for x in v.values():
        assert x["utt_per_s"] > 0 and x["step_s"] > 0 and x["peak_memory_mib"] > 0
        assert x["memory_kind"] == "cpu_peak_rss"
        assert x["utt_per_s"] == pytest.approx(2 / x["step_s"], rel=1e-3)
    # the gates at the target: their expected sparsity is it; sampled execution computes about the kept share of
    # each unit type (saturated gates: the kept units), the masked variant every unit
    for name in ("pruned_target", "pruned_target_masked"):
        assert v[name]["expected_sparsity"] == pytest.approx(0.7, abs=0.01)
        assert set(v[name]["units_computed"]) == {"conv", "head", "attlayer", "interm", "ffnlayer"}
    assert all(share == 1.0 for share in v["pruned_target_masked"]["units_computed"].values())
    assert all(share < 1.0 for share in v["pruned_target"]["units_computed"].values())
    ratios = r["ratios"]
    assert ratios["pruned_target_vs_hf"] == pytest.approx(v["pruned_target"]["utt_per_s"] / v["hf"]["utt_per_s"],
                                                          rel=1e-3)
    assert ratios["pruned_target_vs_masked"] == pytest.approx(
        v["pruned_target"]["utt_per_s"] / v["pruned_target_masked"]["utt_per_s"], rel=1e-3)
    assert ratios["pruned_vs_dense"] == pytest.approx(v["pruned"]["step_s"] / v["dense"]["step_s"], rel=1e-3)
    t = r["targets"]
    assert set(t) == {"dense_at_least_hf", "pruned_within_1_10x_dense", "pruned_target_1_5x_hf",
                      "pruned_target_memory_not_above_hf"}
    assert t["pruned_target_1_5x_hf"] == (v["pruned_target"]["utt_per_s"] >= 1.5 * v["hf"]["utt_per_s"])
    assert t["pruned_target_memory_not_above_hf"] == (
        v["pruned_target"]["peak_memory_mib"] <= v["hf"]["peak_memory_mib"])
    assert t["pruned_within_1_10x_dense"] == (v["pruned"]["step_s"] <= 1.10 * v["dense"]["step_s"])
    assert t["dense_at_least_hf"] == (v["dense"]["utt_per_s"] >= v["hf"]["utt_per_s"])


def test_train_benchmark_runs_only_the_variants_asked_for(capsys):
    main(["train", "--shape", "tiny", "--batch", "1", "--seconds", "1", "--steps", "1", "--warmup", "0",
                "--threads", "1", "--variants", "dense,pruned_target", "--rounds", "1", "--json"])
    r = json.loads(capsys.readouterr().out)
    # the variants at a target run only with --target
    assert list(r["variants"]) == ["dense"] and r["variants"]["dense"]["utt_per_s"] > 0
    assert r["ratios"] == {} and r["targets"] == {}
    with pytest.raises(SystemExit):
        main(["train", "--variants", "dense,sparse"])


def test_loader_benchmark_prints_json(capsys):
    main(["loader", "--utterances", "8", "--batch", "4", "--batches", "2", "--workers", "0,1", "--seconds", "1",
                "--json"])
    r = json.loads(capsys.readouterr().out)
    assert r["augment"] is True and r["cpus"] >= 1
    assert [x["workers"] for x in r["results"]] == [0, 1]
    assert all(x["utt_per_s"] > 0 for x in r["results"])


def test_loader_corpus_augments_every_crop(tmp_path):
    from hp.training.feeding import CropDataset

    table, augmenter = loader_corpus(tmp_path, 3)
    assert set(augmenter.available) == {"reverb", "noise", "music", "babble"}
    assert table["duration_s"].between(4, 8).all()
    labels = sorted(set(table["label"]))
    clean, augmented = CropDataset(table, labels, 1, 0), CropDataset(table, labels, 1, 0, augmenter)
    for i in range(len(table)):
        (a, y), (b, z) = clean[i], augmented[i]  # one rng per item: the same crop, then augmented
        assert a.shape == b.shape == (16000,) and y == z
        assert not torch.allclose(a, b)


def test_compaction_benchmark_draws_masks_to_a_mac_target(capsys):
    main(["compaction", "--shape", "tiny", "--sparsity", "0.6", "--measure", "macs", "--seconds", "1",
                "--repeats", "1", "--threads", "1", "--json"])
    r = json.loads(capsys.readouterr().out)
    assert r["measure"] == "macs" and r["macs_counted_equal_profiled"] is True
    assert r["achieved_sparsity"] == r["macs_sparsity"] == pytest.approx(0.6, abs=0.01)
    assert r["macs_sparsity"] == pytest.approx(1 - r["macs_compact"] / r["macs_dense"], abs=1e-6)
    assert r["params_sparsity"] != r["macs_sparsity"] and r["max_abs_diff"] <= 1e-4


def test_train_compaction_benchmark_runs_both_ways(capsys):
    main(["train-compaction", "--batch", "2", "--seconds", "0.5", "--steps", "8", "--switch", "3",
                "--threads", "1", "--json"])
    r = json.loads(capsys.readouterr().out)
    gated, compacted = r["runs"]["gated"], r["runs"]["compacted"]
    assert gated["frozen_at"] == compacted["frozen_at"] == compacted["compacted_at"] == 3 and gated["compacted_at"] is None
    assert compacted["params_training"] < gated["params_training"]
    # the same run (no dropout): float reorderings only (tests/unit/test_training.py)
    assert r["final_max_abs_diff"] < 1e-3


def test_latency_benchmark_times_saved_models(tmp_path, capsys):
    from hp.tasks import TaskModel

    from configs import head_config

    torch.manual_seed(0)
    model = TaskModel("cm", hp.Frontend(hp.SHAPES["tiny"]), ["bonafide", "spoof"], head_config())
    draw_masks(model.frontend, 0.5, seed=0)
    model.save(tmp_path / "gated")
    model.compacted().save(tmp_path / "small")
    main(["latency", str(tmp_path / "gated"), str(tmp_path / "small"), "--seconds", "1", "--repeats", "2",
                "--json"])
    gated, small = json.loads(capsys.readouterr().out)["models"]
    assert small["macs_frontend"] == gated["macs_frontend"] < hp.Frontend(hp.SHAPES["tiny"]).num_macs(1.0)
    assert small["macs"] < gated["macs"] and small["params_frontend"] < gated["params_frontend"]
