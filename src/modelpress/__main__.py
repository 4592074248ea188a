"""``python -m modelpress`` (and ``torchrun -m modelpress``) runs the CLI."""

import sys

from .cli import main

sys.exit(main())
