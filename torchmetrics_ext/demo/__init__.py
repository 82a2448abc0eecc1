"""``torchmetrics-ext demo``: a two-task recommender trained with Lightning, its metrics logged and drawn.

Importing this package imports ``lightning`` and the report needs ``matplotlib`` (the ``demo``
extra); the rest of ``torchmetrics_ext`` never imports it.
"""

from torchmetrics_ext.demo.train import DemoConfig, run_training_demo

__all__ = ["DemoConfig", "run_training_demo"]
