"""python -m hp: see hp.deploy.cli."""
import sys

from hp.deploy.cli import main

sys.exit(main())
