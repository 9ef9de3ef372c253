"""``python -m ifnd`` and the ``ifnd`` console script: see :mod:`ifnd.cli`."""

import sys

from ifnd.cli import main


def run() -> None:
    """Entry point of the ``ifnd`` console script (exits with the command's status)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
