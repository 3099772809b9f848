"""``python -m helpers.generate``: see ``helpers/generate/__init__.py``."""

import sys

from .run import main

sys.exit(main())
