"""``python -m mgrec.prepare ...``: the same command as ``mgrec prepare ...``."""

import sys

from mgrec.prepare import main

sys.exit(main())
