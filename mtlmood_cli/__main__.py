"""`python -m mtlmood_cli ...`: the same as the `mtlmood` console script."""

import sys

from mtlmood_cli.main import main

sys.exit(main())
