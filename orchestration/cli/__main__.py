"""`python -m orchestration.cli`: the `meshline` command without its console script."""

import sys

from orchestration.cli import main

sys.exit(main())
