"""``python -m server``: the ``ioc`` command line (server/cli)."""

import sys

from server.cli.main import main

sys.exit(main())
