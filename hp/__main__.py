"""python -m hp: see hp.cli."""
import sys

from hp.cli import main

sys.exit(main())
