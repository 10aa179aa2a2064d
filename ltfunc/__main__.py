"""``python -m ltfunc``: the same as the ``ltfunc`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
