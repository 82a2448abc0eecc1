"""Where TorchRec's interpreter is, for the tests that compare with TorchRec run in its own venv."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TORCHREC_PYTHON"]

# $TORCHREC_PYTHON, else the first of the documented venvs that exists (the tests skip without one)
TORCHREC_PYTHON = next(
    (
        Path(p)
        for p in (
            os.environ.get("TORCHREC_PYTHON", ""),
            "/work/venv-torchrec-parity/bin/python",
            "/work/venv-torchrec/bin/python",
        )
        if p and Path(p).exists()
    ),
    Path("/work/venv-torchrec-parity/bin/python"),
)
