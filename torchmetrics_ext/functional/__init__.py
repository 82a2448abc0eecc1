"""Functional twins of every metric: pure functions over one set of tensors, no state.

Each family module lists its public functions in its own ``__all__``; this package re-exports
exactly those lists.
"""

from torchmetrics_ext.functional import auc as _auc
from torchmetrics_ext.functional import counters as _counters
from torchmetrics_ext.functional import entropy as _entropy
from torchmetrics_ext.functional import hindsight as _hindsight
from torchmetrics_ext.functional import multilabel as _multilabel
from torchmetrics_ext.functional import pointwise as _pointwise
from torchmetrics_ext.functional import ranking as _ranking
from torchmetrics_ext.functional import regression as _regression
from torchmetrics_ext.functional import reliability as _reliability
from torchmetrics_ext.functional import session as _session
from torchmetrics_ext.functional import session_pairwise as _session_pairwise
from torchmetrics_ext.functional.auc import *  # noqa: F403
from torchmetrics_ext.functional.counters import *  # noqa: F403
from torchmetrics_ext.functional.distribution import distribution
from torchmetrics_ext.functional.entropy import *  # noqa: F403
from torchmetrics_ext.functional.hindsight import *  # noqa: F403
from torchmetrics_ext.functional.multilabel import *  # noqa: F403
from torchmetrics_ext.functional.pointwise import *  # noqa: F403
from torchmetrics_ext.functional.ranking import *  # noqa: F403
from torchmetrics_ext.functional.regression import *  # noqa: F403
from torchmetrics_ext.functional.reliability import *  # noqa: F403
from torchmetrics_ext.functional.session import *  # noqa: F403
from torchmetrics_ext.functional.session_pairwise import *  # noqa: F403

__all__: list[str] = ["distribution"]
__all__ += _auc.__all__
__all__ += _counters.__all__
__all__ += _entropy.__all__
__all__ += _hindsight.__all__
__all__ += _multilabel.__all__
__all__ += _pointwise.__all__
__all__ += _ranking.__all__
__all__ += _regression.__all__
__all__ += _reliability.__all__
__all__ += _session.__all__
__all__ += _session_pairwise.__all__
__all__.sort()

# `MAP`'s snake_case twin under its class's name, for `tmx.functional.map(...)`; not in `__all__`,
# so `from torchmetrics_ext.functional import *` keeps Python's builtin `map`
map = map_at_k  # noqa: F405
