"""Glue to training frameworks (nothing in the package imports from here).

:mod:`torchmetrics_ext.integrations.huggingface` builds ``compute_metrics`` for
``transformers.Trainer``.
"""

__all__: list[str] = []
