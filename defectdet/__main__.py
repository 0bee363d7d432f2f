"""``python -m defectdet``: the same as the ``defectdet`` command."""

import sys

from .cli import main

sys.exit(main())
