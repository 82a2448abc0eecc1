"""``python -m torchmetrics_ext``: the ``torchmetrics-ext`` command line (``demo``, ``evaluate``)."""

import sys

from torchmetrics_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
