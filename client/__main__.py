"""``python -m client generate KIND ...``."""

import sys

from pipeline.cli import quiet_libraries

quiet_libraries()  # before client.cli, whose commands import TensorFlow

from client.cli import main  # noqa: E402

sys.exit(main())
