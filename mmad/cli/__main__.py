"""`python -m mmad.cli ...`: the same as the `mmad` command."""

import sys

from mmad.cli.main import main

sys.exit(main())
