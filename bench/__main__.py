"""``python -m bench [--quick] [--output PATH] …`` (see ``python -m bench --help``)."""

import sys

from .runner import main

sys.exit(main())
