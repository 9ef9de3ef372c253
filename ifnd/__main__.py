"""``python -m ifnd``: see :mod:`ifnd.cli`."""

import sys

from ifnd.cli import main

if __name__ == "__main__":
    sys.exit(main())
