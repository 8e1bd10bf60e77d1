"""``python -m serving serve|serving-config|generate ...``."""

import sys

from serving.cli import main

sys.exit(main())
