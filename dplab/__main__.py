"""``python -m dplab COMMAND ...``: the command line (:mod:`dplab.cli.main`)."""

import sys

from dplab.cli.main import main

sys.exit(main())
