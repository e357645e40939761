"""`python -m graphgen ...`: the `graphgen` command."""

import sys

from graphgen.cli import main

sys.exit(main())
