import sys

from sandbox.thin.entry import main

sys.exit(main())
