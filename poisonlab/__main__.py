"""``python -m poisonlab`` runs the CLI."""

import sys

from poisonlab.cli import main

sys.exit(main())
