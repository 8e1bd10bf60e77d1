"""``python -m serving serve|serving-config ...``."""

import sys

from pipeline.cli import quiet_libraries

quiet_libraries()  # before serving.cli, whose commands import TensorFlow

from serving.cli import main  # noqa: E402

sys.exit(main())
