"""`python -m inferchaos.cli`: the same as the `inferchaos` command."""

import sys

from inferchaos.cli import main

sys.exit(main())
