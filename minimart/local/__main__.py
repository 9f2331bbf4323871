"""``python -m minimart.local COMMAND``: the same command line as ``minimart``."""

import sys

from minimart.cli import main

sys.exit(main())
