"""Benchmarks that print JSON, one module of hp.benchmarks each: `python -m hp.benchmarks <benchmark> ... [--json]`.

compaction        dense vs compacted model at random masks: params, MACs, CPU latency, parity (compaction.py)
scoring           SV scoring with AS-norm on random embeddings: wall time (scoring.py)
train             training steps of transformers' WavLM, hp dense, hp pruned: utt/s, peak memory (training.py)
train-compaction  a training run with and without train-time compaction: step times, wall time (training.py)
latency           saved task models timed side by side: params, MACs, CPU latency (latency.py)
loader            the training data path alone (decode, crop, augmentation): utt/s per worker count (loader.py)
audio-check       the manifests stage's audio check, headers vs full decode: files/s (audio_check.py)
corpus-scale      SV prepare, manifests and score on a VoxCeleb-size tree: time, memory (corpus_scale.py)
int8              fp32 vs int8 ONNX of a compacted front end: size, CPU latency, agreement (int8.py)
"""
from __future__ import annotations

import argparse
import json
import sys

from hp.benchmarks import audio_check, compaction, corpus_scale, int8, latency, loader, scoring, training

MODULES = (compaction, scoring, training, latency, loader, audio_check, corpus_scale, int8)  # the order of --help


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hp.benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for module in MODULES:
        module.add_parser(sub)  # each sets `run`, its benchmark's function of the parsed arguments
    for benchmark in sub.choices.values():  # every benchmark prints its result the same way
        benchmark.add_argument("--json", action="store_true", help="print one JSON line (default: indented JSON)")
    args = parser.parse_args(argv)
    json.dump(args.run(args), sys.stdout, indent=None if args.json else 2)
    print()


if __name__ == "__main__":
    main()
