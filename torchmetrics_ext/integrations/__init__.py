"""Glue for training frameworks: :mod:`~torchmetrics_ext.integrations.lightning` (optional extra).

Nothing in the package imports from here; :class:`UnpaddedDistributedSampler` needs only PyTorch.
"""

from torchmetrics_ext.integrations.sampler import UnpaddedDistributedSampler

__all__ = ["UnpaddedDistributedSampler"]
