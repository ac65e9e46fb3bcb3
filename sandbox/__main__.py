import sys

from sandbox.thin.entry import run

sys.exit(run())
