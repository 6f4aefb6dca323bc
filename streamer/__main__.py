"""Entry point for ``python -m streamer``."""

import sys

from streamer.commands.entry import main

sys.exit(main())
