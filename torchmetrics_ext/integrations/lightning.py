"""Lightning glue: :class:`RecMetricCallback` updates and logs :class:`~torchmetrics_ext.RecMetricModule` s.

The pattern (see ``docs/module.md``): keep one module per stage as attributes of the
``LightningModule`` (so checkpoints save and restore every metric state), return the model
output dict from ``training_step`` (with ``"loss"``) and ``validation_step``, and add the callback:

.. code-block:: python

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.train_metrics = RecMetricModule(tasks, {"ne": "ne", "auc": "auc"}, prefix="train/")
            self.val_metrics = RecMetricModule(tasks, {"ne": "ne", "auc": "auc"}, prefix="val/")

        def training_step(self, batch, batch_idx):
            out = self.model_out(batch)  # {"click_pred": ..., "click_label": ..., ...}
            return {"loss": self.loss(out), **out}

    trainer = L.Trainer(callbacks=[RecMetricCallback()])

Importing this module imports ``lightning`` (the ``lightning`` extra); the rest of the package
never does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist
from torch import Tensor

from torchmetrics_ext.integrations.sampler import UnpaddedDistributedSampler
from torchmetrics_ext.module import RecMetricModule

__all__ = ["RecMetricCallback", "UnpaddedDistributedSampler"]


class RecMetricCallback(pl.Callback):
    """Update the LightningModule's metric modules from step outputs and log their values.

    * after each training step: ``train`` module ``update(outputs)``; when its
      ``should_compute()`` is true, its ``compute()`` values are written to the trainer's loggers
      at that step, and only there (as Lightning's ``LearningRateMonitor`` writes its values;
      ``log_dict`` from a step hook would repeat the last values at every later logging step of
      the epoch, under steps where nothing was computed), whatever ``log_every_n_steps`` is; they
      also go to ``trainer.callback_metrics`` (e.g. for ``ModelCheckpoint(monitor=...)``);
    * at the end of each training epoch: ``log_dict(compute())``, unless the last step just logged
      the same values;
    * at the start of each validation epoch the ``val`` module is reset; after each validation
      step it is updated; at the end of the epoch its values are logged.

    Values are synced by the module itself (one fused gather), so they are logged with
    ``sync_dist=False``. Under ``precision="bf16-true"``/``"16-true"`` the modules keep their
    float64 sums: the trainer's ``model.to(dtype)`` casts no metric state (only ``set_dtype`` does).

    **Checkpoints.** Under DDP every rank holds its own share of the metric states, but Lightning
    writes the model's ``state_dict`` from rank 0 only. The callback therefore gathers every
    rank's module ``state_dict`` when a checkpoint is saved (``on_save_checkpoint`` runs on all
    ranks) and stores them under ``checkpoint["rec_metric_modules"]``; on resume each rank loads
    its own, so lifetime and window values continue exactly as in an uninterrupted run. A
    checkpoint resumed with another number of ranks restarts the modules (with a warning).

    Args:
        train: attribute name of the training :class:`~torchmetrics_ext.RecMetricModule` (``None``: none).
        val: attribute name of the validation module (``None``: none, e.g. a model without validation
            metrics).
        output_key: read the model output dict from ``outputs[output_key]`` instead of ``outputs``.

    Raises:
        AttributeError: at ``setup`` (before any step), for every named attribute the stage uses
            that is not a ``RecMetricModule``; the message lists the module's ``RecMetricModule``
            attributes and how to name them (``RecMetricCallback(train=..., val=None)``).
        TypeError: a step whose output is not a dict with the module's columns, e.g. a
            ``training_step`` that returns only the loss (Lightning passes it as ``{"loss": loss}``).

    Example:
        >>> from torchmetrics_ext.integrations.lightning import RecMetricCallback
        >>> RecMetricCallback(train="train_metrics", val="val_metrics").val
        'val_metrics'
    """

    def __init__(
        self, train: str | None = "train_metrics", val: str | None = "val_metrics", output_key: str | None = None
    ) -> None:
        super().__init__()
        self.train, self.val, self.output_key = train, val, output_key
        self._train_logged_at: int | None = None  # the training module's update count when last logged

    def _module(self, pl_module: pl.LightningModule, name: str | None) -> RecMetricModule | None:
        if name is None:
            return None
        module = getattr(pl_module, name, None)
        if not isinstance(module, RecMetricModule):
            self._missing(pl_module, [name])
        return module

    def _missing(self, pl_module: pl.LightningModule, names: list[str]) -> None:
        """Raise the error for configured attributes that are not RecMetricModules, with the fix."""
        owner = type(pl_module).__name__
        found = [name for name, child in pl_module.named_children() if isinstance(child, RecMetricModule)]
        kinds = [type(getattr(pl_module, n)).__name__ if hasattr(pl_module, n) else "missing" for n in names]
        what = " and ".join(f"`{owner}.{name}` is {kind}" for name, kind in zip(names, kinds))
        raise AttributeError(
            f"RecMetricCallback(train={self.train!r}, val={self.val!r}) reads the RecMetricModule attributes of the "
            f"LightningModule, but {what}. Name the attributes that hold them (`{owner}` has {found or 'none'}), "
            "and None for a stage without one: e.g. `RecMetricCallback(train=..., val=None)`."
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check every module this stage uses before the first step (one error naming all that are wrong)."""
        names = {"fit": [self.train, self.val], "validate": [self.val]}.get(stage, [])
        wrong = [n for n in names if n is not None and not isinstance(getattr(pl_module, n, None), RecMetricModule)]
        if wrong:
            self._missing(pl_module, wrong)

    def _model_out(self, outputs: Any, module: RecMetricModule, stage: str) -> Mapping[str, Tensor]:
        out = outputs if self.output_key is None or not isinstance(outputs, Mapping) else outputs.get(self.output_key)
        where = "" if self.output_key is None else f" under {self.output_key!r}"
        wanted = [key for t in module.tasks for key in (t.prediction_name, t.label_name)]
        training = stage == "training"
        returns = "{'loss': loss, **model_out}" if training else "model_out"
        if not isinstance(out, Mapping) or not any(key in out for key in wanted):
            got = f"a dict with keys {sorted(out)}" if isinstance(out, Mapping) else type(out).__name__
            columns = ", ".join(repr(k) for k in wanted[:4]) + (", ..." if len(wanted) > 4 else "")
            raise TypeError(
                f"RecMetricCallback: the {stage} step must return the model output dict{where} with the columns "
                f"the module reads ({columns}), e.g. `return {returns}`; got {got}"
                + (" (Lightning passes a step that returns only the loss as {'loss': loss})." if training else ".")
            )
        return out

    @staticmethod
    def _log(pl_module: pl.LightningModule, module: RecMetricModule) -> None:
        with warnings.catch_warnings():
            # the values are synced by the module's compute(): Lightning's advice to sync them again
            # (one warning per key under DDP) does not apply
            warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
            pl_module.log_dict(module.compute(), sync_dist=False)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Update the training module; log it every ``compute_interval_steps``.

        A step that returned ``None`` (Lightning's way to skip a batch; the callback receives an
        empty dict) updates nothing.
        """
        module = self._module(pl_module, self.train)
        if module is None or outputs is None or (isinstance(outputs, Mapping) and not outputs):
            return
        module.update(self._model_out(outputs, module, "training"))
        if module.should_compute():
            values = module.compute()  # on every rank: the module syncs
            trainer.callback_metrics.update(values)
            scalars = {key: float(value) for key, value in values.items()}
            step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step Lightning logs this batch at
            for logger in trainer.loggers:  # rank-zero only, as Lightning's loggers are
                logger.log_metrics(scalars, step=step)
            self._train_logged_at = module._step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the training module's values at the end of the epoch (unless its last step just did)."""
        module = self._module(pl_module, self.train)
        if module is not None and module._step != self._train_logged_at:
            self._log(pl_module, module)
            self._train_logged_at = module._step

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the validation module afresh."""
        module = self._module(pl_module, self.val)
        if module is not None:
            module.reset()

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Update the validation module from the step's output."""
        module = self._module(pl_module, self.val)
        if module is not None and not trainer.sanity_checking:
            module.update(self._model_out(outputs, module, "validation"))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the validation module's values over the whole validation set."""
        module = self._module(pl_module, self.val)
        if module is not None and not trainer.sanity_checking:
            self._log(pl_module, module)

    # ------------------------------------------------------------------ checkpoints

    def _managed(self, pl_module: pl.LightningModule) -> dict[str, RecMetricModule]:
        names = [name for name in (self.train, self.val) if name is not None]
        return {name: module for name in names if (module := self._module(pl_module, name)) is not None}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Store every rank's module states (one object all-gather under DDP)."""
        local = {name: module.state_dict() for name, module in self._managed(pl_module).items()}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            per_rank: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, local)
        else:
            per_rank = [local]
        checkpoint["rec_metric_modules"] = per_rank

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Give each rank back its own module states.

        A checkpoint without them (saved without this callback) holds rank 0's states alone, which
        Lightning has loaded into every rank: under DDP the modules start afresh, with a warning,
        rather than count rank 0's samples once per rank.
        """
        per_rank = checkpoint.get("rec_metric_modules")
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if per_rank is None:
            if world > 1:
                for name, module in self._managed(pl_module).items():
                    warnings.warn(
                        f"RecMetricCallback: the checkpoint holds no per-rank metric states (saved without this "
                        f"callback): its `{name}` states are rank 0's alone; `{name}` starts afresh.",
                        stacklevel=2,
                    )
                    module.reset()
            return
        rank = dist.get_rank() if world > 1 else 0
        for name, module in self._managed(pl_module).items():
            if len(per_rank) == world:
                # as Lightning loads the model: `strict_loading = False` lets a metric added since start afresh
                module.load_state_dict(per_rank[rank][name], strict=getattr(pl_module, "strict_loading", True))
            else:
                warnings.warn(
                    f"RecMetricCallback: the checkpoint holds metric states of {len(per_rank)} rank(s), this run "
                    f"has {world}; `{name}` starts afresh.",
                    stacklevel=2,
                )
                module.reset()
