import sys

from minimart.local.cli import main

sys.exit(main())
