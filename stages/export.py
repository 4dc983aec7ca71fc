"""export@<task>: the deployable bundle (ONNX included) and dense-vs-compact cost.
Usage: python -m stages.export {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages import eer, summary
from hp.stages.export import export

task = sys.argv[1]
result = export(task, load_params(), Path("models") / task / "compact", Path("scores") / task,
                Path("data") / task / "manifests", Path("metrics") / task, Path("models") / task / "export")
latency, tested = result["compact"]["latency_ms"], result["test_set"]
summary({"latency": f"dense {result['dense']['latency_ms']['torch_cpu']:.2f} ms, compact {latency['torch_cpu']:.2f} ms "
                    f"(PyTorch); ONNX fp32 {latency['onnxruntime_cpu']:.2f} ms, int8 {result['int8']['latency_ms']:.2f} ms",
         f"EER on {tested['test_set']}": f"fp32 {eer(tested['fp32'])}; int8 {eer(tested['int8'])}",
         "release": f"models/{task}/export (model card: README.md)"})
