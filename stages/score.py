"""score@<task>: metrics of the compact model.  Usage: python -m stages.score {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params, runtime
from hp.stages.score import check, score
from hp.stages import eer, summary
from hp.utils import distributed

task = sys.argv[1]
params = load_params()
check(task, params)  # before any process starts
distributed.relaunch(runtime(params).nproc_per_node)  # becomes torchrun if > 1 process
result = score(task, params, Path("models") / task / "compact", Path("data") / task / "manifests",
               Path("metrics") / task / "compact.json", Path("metrics") / f"{task}.json",
               Path("plots") / task / "det.csv", Path("scores") / task)
if result is not None:  # rank 0
    if task == "sv":
        summary({f"{name} {kind}": eer(m) for name, lists in result["lists"].items() for kind, m in lists.items()
                 if isinstance(m, dict) and "eer" in m})
    else:
        summary({split: f"EER {eer(result[split])}, minDCF {result[split]['min_dcf']:.4f}, "
                        f"actDCF {result[split]['act_dcf']:.4f}, Cllr {result[split]['cllr']:.4f}"
                 for split in ("dev", "eval")})
distributed.shutdown()
