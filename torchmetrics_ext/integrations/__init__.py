"""Glue for training frameworks: Lightning and the Hugging Face Trainer (optional extras).

:mod:`~torchmetrics_ext.integrations.lightning` and :mod:`~torchmetrics_ext.integrations.huggingface`.
Nothing in the package imports from here; :class:`UnpaddedDistributedSampler` needs only PyTorch.
"""

from torchmetrics_ext.integrations.sampler import UnpaddedDistributedSampler

__all__ = ["UnpaddedDistributedSampler"]
