"""`python -m blockd` is the `blockd` command."""

import sys

from blockd.cli import main

sys.exit(main())
