"""prepare@<task>: write the task's raw corpus.  Usage: python -m stages.prepare {sv,cm}"""
import sys
from pathlib import Path

from hp.params import load_params
from hp.stages import summary
from hp.stages.prepare import prepare

task = sys.argv[1]
summary({key: value for key, value in prepare(task, load_params(), Path("data") / task / "corpus").items()
         if not isinstance(value, (dict, list))})
