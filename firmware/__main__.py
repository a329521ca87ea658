"""`python -m firmware` is the `branchline` command."""

import sys

from firmware.cli import main

sys.exit(main())
