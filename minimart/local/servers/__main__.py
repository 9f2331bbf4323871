"""``python -m minimart.local.servers up|down|status|restart [NAME...]`` (used by
mk/servers.mk): the same as ``minimart servers ...``."""

import sys

from minimart.cli import main

sys.exit(main(["servers", *sys.argv[1:]]))
