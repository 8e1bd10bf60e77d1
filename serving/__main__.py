"""``python -m serving serve|serving-config ...``."""

import sys

from serving.cli import main

sys.exit(main())
