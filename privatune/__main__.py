"""``python -m privatune``: the same as the `privatune` command."""

import sys

from privatune.cli import main

sys.exit(main())
