"""``python -m contrastive_decoding.cli ...``: the same command line as ``contrastive-decoding ...``."""

import sys

from . import main

sys.exit(main())
