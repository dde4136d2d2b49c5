"""``python -m simulations.report DIR``."""

import sys

from simulations.report import main

sys.exit(main())
