"""The `graphgen` command, for `python cli.py ...` in a checkout.

The command is installed from `graphgen.cli` (a module inside the package: a top-level module
named `cli` would clash with any other distribution's `cli`); this file only forwards to it.
"""

import sys

from graphgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
