import sys

from mgrec.cli import main

sys.exit(main())
