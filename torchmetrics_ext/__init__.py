"""torchmetrics_ext: recommendation and ranking metrics as first-class TorchMetrics objects.

Import as ``import torchmetrics_ext as tmx``; classes are exported flat (``tmx.NormalizedEntropy``),
functional twins live in :mod:`torchmetrics_ext.functional`, dataset aggregation in
:mod:`torchmetrics_ext.aggregation` (both imported with the package: ``tmx.functional.auc``,
``tmx.aggregation.MetricsAggregator``). The exported names are the family modules' own ``__all__``
lists, gathered by :mod:`torchmetrics_ext.metrics`, and the wrappers' (:mod:`torchmetrics_ext.wrappers`).

The subpackages with optional dependencies or framework glue (``evaluate``, ``integrations``)
are imported by name, ``import torchmetrics_ext.evaluate``: importing the package never
imports pyarrow or Lightning.
"""

from torchmetrics_ext import aggregation, functional, metrics, module, wrappers  # noqa: F401 (tmx.aggregation)
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
from torchmetrics_ext.module import *  # noqa: F403
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import UndefinedMetricWarning
from torchmetrics_ext.wrappers import *  # noqa: F403

__version__ = "0.1.0"

__all__ = ["UndefinedMetricWarning", "WrongTypeError"]
__all__ += metrics.__all__
__all__ += module.__all__
__all__ += wrappers.__all__
__all__.sort()
