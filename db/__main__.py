"""Entry point: ``python -m db ...`` (see :mod:`db.cli`)."""
import sys

from db.cli import main

if __name__ == "__main__":
    sys.exit(main())
