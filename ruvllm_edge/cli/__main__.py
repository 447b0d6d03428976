"""``python -m ruvllm_edge.cli ...`` (what the systemd units and tests run)."""

import sys

from . import main

sys.exit(main())
