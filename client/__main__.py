"""``python -m client generate KIND ...``."""

import sys

from client.cli import main

sys.exit(main())
