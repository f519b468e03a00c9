"""Entry point as in the reference: ``cd src && python main.py`` or ``python src/main.py``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mgrec.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
