"""``python -m server.report DIR``."""

import sys

from server.report import main

sys.exit(main())
