"""Metric classes (``torchmetrics.Metric`` subclasses), one module per family.

Each family module lists its public classes in its own ``__all__``; this package (and the
top-level ``torchmetrics_ext``) re-exports exactly those lists, so a new metric is exported by
adding it to its family's ``__all__`` alone.
"""

from torchmetrics_ext.metrics import (
    auc,
    base,
    counters,
    entropy,
    hindsight,
    multilabel,
    pointwise,
    qps,
    ranking,
    regression,
    reliability,
    session,
    session_pairwise,
    throughput,
)
from torchmetrics_ext.metrics.auc import *  # noqa: F403
from torchmetrics_ext.metrics.base import *  # noqa: F403
from torchmetrics_ext.metrics.counters import *  # noqa: F403
from torchmetrics_ext.metrics.entropy import *  # noqa: F403
from torchmetrics_ext.metrics.hindsight import *  # noqa: F403
from torchmetrics_ext.metrics.multilabel import *  # noqa: F403
from torchmetrics_ext.metrics.pointwise import *  # noqa: F403
from torchmetrics_ext.metrics.qps import *  # noqa: F403
from torchmetrics_ext.metrics.ranking import *  # noqa: F403
from torchmetrics_ext.metrics.regression import *  # noqa: F403
from torchmetrics_ext.metrics.reliability import *  # noqa: F403
from torchmetrics_ext.metrics.session import *  # noqa: F403
from torchmetrics_ext.metrics.session_pairwise import *  # noqa: F403
from torchmetrics_ext.metrics.throughput import *  # noqa: F403

__all__: list[str] = []
__all__ += auc.__all__
__all__ += base.__all__
__all__ += counters.__all__
__all__ += entropy.__all__
__all__ += hindsight.__all__
__all__ += multilabel.__all__
__all__ += pointwise.__all__
__all__ += qps.__all__
__all__ += ranking.__all__
__all__ += regression.__all__
__all__ += reliability.__all__
__all__ += session.__all__
__all__ += session_pairwise.__all__
__all__ += throughput.__all__
__all__.sort()
