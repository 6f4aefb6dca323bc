"""Entry point for ``python -m streamer``."""

import sys

from streamer.commands.cli import main

sys.exit(main())
