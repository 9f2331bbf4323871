import sys

from minimart.cli import main

sys.exit(main())
