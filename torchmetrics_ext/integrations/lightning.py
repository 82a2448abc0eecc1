"""Lightning glue: :class:`RecMetricCallback` updates and logs :class:`~torchmetrics_ext.RecMetricModule` s.

:class:`AggregatorCheckpoint` keeps every rank's :class:`~torchmetrics_ext.aggregation.MetricsAggregator`
states in Lightning's checkpoints (an aggregator is no ``nn.Module``; see ``docs/aggregation.md``).

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

import copy
import difflib
import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.distributed as dist
import torchmetrics
from torch import Tensor
from torch.utils.data import DistributedSampler, IterableDataset, RandomSampler, SequentialSampler

try:
    import lightning.pytorch as pl
    from lightning.fabric.utilities.data import sized_len
    from lightning.pytorch.callbacks import GradientAccumulationScheduler
    from lightning.pytorch.strategies import Strategy
    from lightning.pytorch.trainer.states import TrainerFn
    from lightning.pytorch.utilities.model_helpers import is_overridden
    from lightning.pytorch.utilities.rank_zero import rank_zero_only
    from lightning.pytorch.utilities.warnings import PossibleUserWarning
except ImportError as err:  # the extra this module needs: say where it comes from
    raise ImportError(
        "torchmetrics_ext.integrations.lightning needs lightning, from the `lightning` extra: "
        "pip install 'torchmetrics-ext[lightning]' (from a clone: pip install -e '.[lightning]')."
    ) from err

from torchmetrics_ext._module_keys import ModuleKeys, _value_entries
from torchmetrics_ext.integrations._lightning_aggregator import AggregatorCheckpoint
from torchmetrics_ext.integrations.sampler import UnpaddedDistributedSampler
from torchmetrics_ext.module import RecMetricModule
from torchmetrics_ext.utilities.checks import as_int
from torchmetrics_ext.utilities.distributed import _world, unshare_memory
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import note_spawned_from, spawn_origin, warn_at_user

__all__ = ["AggregatorCheckpoint", "RecMetricCallback", "UnpaddedDistributedSampler"]


def _warn_rank_zero(message: str, category: type[Warning]) -> None:
    """``rank_zero_warn`` at the user's line (``user_stacklevel``: their ``LightningModule`` method, else ``fit``).

    Lightning's ``rank_zero_warn`` counts a fixed ``stacklevel`` from this package's function, so its warnings named
    a line of the callback; a hook's user is the one who called the Trainer.
    """
    if getattr(rank_zero_only, "rank", 0) == 0:
        warn_at_user(message, category)


class _EvalEpoch:
    """One validation or test epoch: a module per dataloader and which of them were logged."""

    def __init__(
        self,
        modules: dict[int, RecMetricModule] | None = None,
        counts: Sequence[float] = (),
        most: Sequence[float] = (),
        at_last_batch: bool = False,
    ) -> None:
        self.modules = modules or {}
        self.counts = list(counts)  # this rank's batches per dataloader
        self.most = list(most)  # the most batches any rank has, per dataloader
        self.at_last_batch = at_last_batch  # log each dataloader after its last batch
        self.logged: set[int] = set()
        self.owner = ""  # `Model.val_metrics` and its stage, for the warning of an epoch whose steps all returned None
        self.stage = "validation"
        self.steps = 0  # this rank's steps of the epoch, and those that returned columns
        self.returned = 0


def _batch_counts_over_ranks(counts: Sequence[float], device: torch.device) -> tuple[list[float], list[float]]:
    """The fewest and the most batches of each dataloader over the ranks (one ``all_reduce`` under DDP)."""
    local = torch.tensor([*counts, *(-float(n) for n in counts)], dtype=torch.float64, device=device)
    if _world() is not None:
        dist.all_reduce(local, op=dist.ReduceOp.MIN)
    values = local.tolist()
    return values[: len(counts)], [-v for v in values[len(counts) :]]


def _stage_dataloaders(trainer: pl.Trainer) -> list[Any] | None:
    """The dataloaders of the evaluation under way, in order (``None`` where Lightning holds none).

    Read from the running loop: ``trainer.val_dataloaders`` still gives a finished fit's during a later
    ``trainer.validate``.
    """
    if trainer.testing:
        loop: Any = trainer.test_loop
    elif trainer.state.fn == TrainerFn.VALIDATING:
        loop = trainer.validate_loop
    else:
        loop = trainer.fit_loop.epoch_loop.val_loop
    combined = getattr(loop, "_combined_loader", None)
    return None if combined is None else list(combined.flattened)


def _padded_samplers(loaders: list[Any] | None) -> list[tuple[int, int, int]]:
    """``(dataloader, samples, padded to)`` of each dataloader whose ``DistributedSampler`` repeats samples.

    PyTorch's ``DistributedSampler`` (the one Lightning gives an evaluation dataloader under DDP, or wraps a
    sampler of the user's in) pads its last round with samples from the start of the order so that every
    rank takes as many: with ``drop_last=False`` and a dataset whose length is not a multiple of the number of
    ranks, ``total_size - len(dataset)`` samples are counted twice by a metric synced over the ranks.
    ``UnpaddedDistributedSampler`` gives each sample once and is never reported.
    """
    found = []
    for i, loader in enumerate(loaders or []):
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, DistributedSampler):
            sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
        if not isinstance(sampler, DistributedSampler) or isinstance(sampler, UnpaddedDistributedSampler):
            continue
        size = sized_len(sampler.dataset)
        total = getattr(sampler, "total_size", None)
        if not sampler.drop_last and size is not None and isinstance(total, int) and total > size:
            found.append((i, size, total))
    return found


def _unsharded_samplers(loaders: list[Any] | None) -> list[tuple[int, int, str]]:
    """``(dataloader, samples, sampler name)`` of each dataloader that reads its whole dataset on this rank.

    Under DDP Lightning replaces a dataloader's ``SequentialSampler`` or ``RandomSampler`` with a
    ``DistributedSampler``; ``Trainer(use_distributed_sampler=False)`` keeps it, so every rank reads every
    sample of its dataset. Where the ranks' datasets are the same (the usual case: one dataset object built
    by the same code), a metric synced over the ranks counts each sample once per rank. A sampler of the
    user's own (which may shard), a ``DistributedSampler`` and an ``IterableDataset`` are never reported.
    """
    found = []
    for i, loader in enumerate(loaders or []):
        if isinstance(getattr(loader, "dataset", None), IterableDataset):
            continue
        sampler = getattr(loader, "sampler", None)
        if sampler is None or type(sampler) not in (SequentialSampler, RandomSampler):
            sampler = getattr(getattr(loader, "batch_sampler", None), "sampler", None)
        if type(sampler) not in (SequentialSampler, RandomSampler):
            continue
        size = sized_len(getattr(sampler, "data_source", None))
        if size is not None and size > 0:
            found.append((i, size, type(sampler).__name__))
    return found


def _known_counts(counts: list[float], loaders: list[Any] | None) -> list[float]:
    """Each dataloader's batch count, ``inf`` for one without a length (its last batch is not known).

    Lightning counts such a dataloader as ``limit_*_batches`` when that is a whole number: at most that
    many batches, maybe fewer (and not as many on every rank), so that count tells no last batch.
    """
    if loaders is None or len(loaders) != len(counts):  # not the dataloaders counted: keep Lightning's counts
        return counts
    return [n if sized_len(loader) is not None else float("inf") for n, loader in zip(counts, loaders, strict=True)]


def _model_state_is_rank_zeros(trainer: pl.Trainer | None) -> bool:
    """Whether the checkpoint's model ``state_dict`` holds rank 0's own metric states.

    True under Lightning's base ``Strategy`` saving (DDP and its spawn/fork variants, one device):
    rank 0 writes its module's plain ``state_dict``. A strategy that saves the model its own way may
    not: FSDP's sharded checkpoints (and ``ModelParallelStrategy``'s) go through
    ``torch.distributed.checkpoint``, whose planner writes each tensor that every rank holds from
    whichever rank has saved the least so far, so the metric states there can be any rank's, a
    mix of them even; DeepSpeed's engine writes the model itself.
    """
    strategy = getattr(trainer, "strategy", None)
    if strategy is None:
        return True
    kind = type(strategy)
    return (
        kind.save_checkpoint is Strategy.save_checkpoint
        and kind.lightning_module_state_dict is Strategy.lightning_module_state_dict
    )


def _merge_per_rank(earlier: Any, per_rank: list[Any]) -> list[Any]:
    """``per_rank`` joined with the entry another callback saved in the same checkpoint (each rank's dict of both).

    A rank whose states either holds as gone (``None``) stays gone; an entry of another length
    (none saved yet) is replaced.
    """
    if not isinstance(earlier, list) or len(earlier) != len(per_rank):
        return per_rank
    return [None if old is None or new is None else {**old, **new} for old, new in zip(earlier, per_rank, strict=True)]


_STATE_FORM = (
    "{'train_logged_at': <whole number >= 0 or None>, 'train_values_at': <whole number >= 0 or None>, "
    "'train_values': <dict of str to float, None where train_values_at is None>} (the last two absent in earlier "
    "versions)"
)


def _callback_state(state: Any) -> tuple[int | None, tuple[int, dict[str, float]] | None]:
    """``RecMetricCallback.state_dict()``'s form read back: the logged-at count and ``(count, values)``.

    Raises:
        ValueError: ``state`` is not of that form.
    """

    def count(value: Any) -> int | None:
        number = None if value is None else as_int(value)
        if value is not None and (number is None or number < 0):
            raise ValueError
        return number

    def real(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        return float(value)

    try:
        if not isinstance(state, Mapping):
            raise ValueError
        logged, at, values = count(state.get("train_logged_at")), count(state.get("train_values_at")), None
        saved = state.get("train_values")
        if (at is None) != (saved is None) or not isinstance(saved, (Mapping, type(None))):
            raise ValueError
        if at is not None and saved is not None:
            if not all(isinstance(key, str) for key in saved):
                raise ValueError
            values = (at, {key: real(value) for key, value in saved.items()})
    except ValueError:
        raise ValueError(
            f"RecMetricCallback.load_state_dict: expected what state_dict saves, {_STATE_FORM}, got {state!r}."
        ) from None
    return logged, values


_DEFAULT_TEST = "test_metrics"  # a model without this attribute is tested without the callback
_DEFAULT_VAL = "val_metrics"  # a model without this attribute nor a `validation_step` has no validation


class RecMetricCallback(pl.Callback):
    """Update the LightningModule's metric modules from step outputs and log their values.

    * after each training step: ``train`` module ``update(outputs)`` (a step that returned
      ``None`` counts as a step without samples, on its rank alone or on all); when its
      ``should_compute()`` is true, its ``compute()`` values are written to the trainer's loggers
      at that step with the ``epoch`` (as every row Lightning writes), and only there (as Lightning's
      ``LearningRateMonitor`` writes its values;
      ``log_dict`` from a step hook would repeat the last values at every later logging step of
      the epoch, under steps where nothing was computed), whatever ``log_every_n_steps`` is; they
      also go to ``trainer.callback_metrics`` (what ``ModelCheckpoint(monitor=...)`` and ``EarlyStopping``
      read) and ``trainer.logged_metrics`` (Lightning's list of what went to the loggers), as a value
      ``self.log`` writes does (not to ``trainer.progress_bar_metrics``: ``self.log`` puts a value there
      only with ``prog_bar=True``). The
      interval counts training batches, not optimizer steps: under ``accumulate_grad_batches=A``
      make it a multiple of ``A`` (``compute_interval_steps=n * A`` computes at the last batch of
      every ``n``-th optimizer step, where each epoch has a multiple of ``A`` batches: Lightning
      starts the accumulation afresh at each epoch); any other interval computes inside an
      accumulation, and two computes in one optimizer step are written at the same logging step
      (the callback warns at ``setup``, for the trainer's factor and every factor a
      ``GradientAccumulationScheduler`` will set, and at an epoch start whose factor changed);
    * at the end of each training epoch: ``log_dict(compute())``, unless the last step just logged
      the same values. The callback never resets the training module: its values cover every
      training batch since the fit began (TorchRec's lifetime values; ``.../window`` for the recent
      samples), not the epoch alone as ``self.log(metric, on_epoch=True)`` would. For per-epoch
      values, call ``self.train_metrics.reset()`` in the ``LightningModule``'s
      ``on_train_epoch_start`` (the step count, and so the compute cadence, carries on);
    * at the start of each validation epoch the ``val`` module is reset; after each validation
      step it is updated (a step that returned ``None`` adds no sample, as in training); at the
      end of the epoch its values are logged. ``trainer.test()`` does the
      same with the ``test`` module. Each validation run is such an epoch, also one every
      ``val_check_interval`` training batches (its values cover that run's samples alone); the
      sanity check's steps (``num_sanity_val_steps``) add no sample and log nothing.

    **``Trainer(barebones=True)``** forbids logging (Lightning's ``self.log`` warns and logs
    nothing under it): the callback then warns once at ``setup``, naming the modules, and only
    updates them at every step; it computes nothing (no sync), logs nothing and puts nothing in
    ``trainer.callback_metrics``. Their ``compute()`` after the run gives the values (the
    training module over every step; the validation module over the last validation epoch).

    **Several validation (or test) dataloaders.** Each dataloader gets values of its own, under
    Lightning's own per-dataloader names: ``"val/ne/click/dataloader_idx_0"``,
    ``"val/ne/click/dataloader_idx_1"``, ... (what ``self.log`` gives in a ``validation_step`` with
    several dataloaders), and ``trainer.validate()`` returns each in its dataloader's dict. The
    module attribute holds dataloader 0; every other dataloader gets a ``copy.deepcopy`` of the
    reset module, made at each epoch start (copies are not checkpointed: validation restarts each
    epoch). Each dataloader's values are computed (and synced) after its last batch, as Lightning
    computes the metrics logged in a step; under DDP every rank must then reach that batch, so the
    callback checks once per epoch (one ``all_reduce`` of the batch counts) that every rank has a
    batch of every dataloader. Where some rank has none (``UnpaddedDistributedSampler`` over fewer
    samples than ranks), or a dataloader has no length (whatever count a whole-number
    ``limit_val_batches`` gives it), every dataloader is computed at the epoch end instead: same
    keys and values, but Lightning then puts all of them in every dataloader's dict (and its printed
    table, which drops the suffix, shows one value per key). A dataloader with no batch on any rank
    logs nothing. With one dataloader the keys have no suffix. A rank with no batch of any dataloader
    of the stage (a validation set smaller than the world) runs no evaluation hook in Lightning, so
    the other ranks' sync would find no partner there: a fit is refused at its start, on every rank
    (``ValueError``, below); ``trainer.validate``/``test`` cannot be checked and wait until the process
    group's timeout (``docs/module.md``). Give every rank a sample.

    Values are synced by the module itself (one fused gather), so they are logged with
    ``sync_dist=False``, and Lightning's advice to log them with ``sync_dist=True`` is silenced for
    these keys alone (a key of the model's own still gets it), from their first log to ``teardown``.
    Under ``precision="bf16-true"``/``"16-true"`` the modules keep their float64 sums: the trainer's
    ``model.to(dtype)`` casts no metric state (only ``set_dtype`` does).

    **``strategy="ddp_spawn"``.** Lightning's spawn launcher pickles the ``LightningModule`` into
    the ranks through ``torch.multiprocessing``, which puts every CPU tensor in shared memory: the
    ranks would all add their samples into one storage per metric state, and synced sums would
    count them twice. Lightning gives parameters and buffers private copies again, not metric
    states; the callback does it for the modules it manages, at ``setup`` (the values are kept).
    Metrics it does not manage (one updated in ``training_step`` and logged with ``self.log``)
    keep sharing: ``reset()`` them in the ``LightningModule``'s ``setup`` (see ``docs/module.md``).
    After the fit, Lightning loads rank 0's ``state_dict`` back into the main process's model: its
    modules then hold rank 0's share of the samples alone (their ``compute()`` is not the logged
    value; read ``trainer.callback_metrics`` or the loggers), and a ``trainer.save_checkpoint()``
    there holds no other rank's states: the callback warns and marks it, so that a resume starts
    the training module afresh (with a warning) rather than take rank 0's share for the whole.
    Save the checkpoints to resume during the fit (``ModelCheckpoint``), in the ranks.

    **Checkpoints.** Under DDP every rank holds its own share of the metric states, but Lightning
    writes the model's ``state_dict`` from rank 0 only. The callback therefore gathers the training
    module's ``state_dict`` of every other rank when a checkpoint is saved (``on_save_checkpoint``
    runs on all ranks) and stores them under ``checkpoint["rec_metric_modules"]`` (rank 0's entry
    is ``None``: its states are the model's ``state_dict``; in one process that is the only copy.
    Under FSDP, DeepSpeed or ``ModelParallelStrategy``, which save the model their own way, so
    that its ``state_dict`` may hold any rank's metric states, rank 0's entry holds its own too);
    on resume each rank loads its own, so lifetime and window values continue exactly as in an
    uninterrupted run. The validation module's states are not gathered: it starts afresh at each
    validation epoch. A checkpoint resumed with another number of ranks restarts the training
    module (with a warning; its update count, and so its compute cadence, carries on, and the
    training values logged before the checkpoint do not go back in ``trainer.callback_metrics``).
    ``trainer.validate``/``test(ckpt_path=...)`` resume nothing and read
    none of them back.

    The callback's own state (:meth:`state_dict`: the training module's update count when it was
    last logged, and the values it logged then, as floats) goes in the checkpoint too, under
    :attr:`state_key` (Lightning saves rank 0's; the values are synced, the same on every rank), so
    that a fit resumed right after a step that logged the training values (a checkpoint saved at an
    epoch's last batch whose interval compute logged them) logs no row repeating them at that
    epoch's end, as the uninterrupted fit logs none, and so that ``trainer.callback_metrics`` holds
    the training values from the resumed fit's start (:meth:`on_train_start`), as the uninterrupted
    fit holds the last computed ones until its next compute. Lightning starts
    ``trainer.callback_metrics`` empty at every fit and checkpoints none of it (a key of the model's
    own ``self.log(..., on_step=True)`` is back at the step that logs it again); without these values
    a ``ModelCheckpoint(monitor="train/ne/click", every_n_train_steps=k)`` due before the resumed
    fit's first compute found no key: Lightning (2.6) skips that save without a word where validation
    runs at the epoch's end, and where it runs inside the epoch saves at the next validation instead,
    or stops the fit with a ``MisconfigurationException`` if the key is still missing there. The key
    names the callback's attribute names and ``output_key``: two callbacks need different ones
    (Lightning refuses two stateful callbacks of one key), and a resume with other names does not find
    the state (Lightning warns; the epoch end may repeat that row and the training keys are missing
    until the first compute, as with a checkpoint of an earlier version, which loads without them).

    Args:
        train: attribute name of the training :class:`~torchmetrics_ext.RecMetricModule` (``None``: none).
        val: attribute name of the validation module (``None``: none, e.g. a model without validation
            metrics). With the default name, a model that has no ``val_metrics`` attribute and no
            ``validation_step`` (so no validation) is fitted as with ``None``.
        output_key: read the model output dict from ``outputs[output_key]`` instead of ``outputs``.
        test: attribute name of the module ``trainer.test()`` updates and logs, as ``val`` for
            validation (``None``: none; a ``trainer.test()`` then logs nothing from the callback).
            With the default name, a model whose ``test_metrics`` is missing or no
            ``RecMetricModule`` (its own ``MetricCollection``, say) is tested as with ``None``; any
            other name must be a ``RecMetricModule`` attribute.

    Raises:
        AttributeError: at ``setup`` (before any step), for every named attribute the stage uses
            that is not a ``RecMetricModule``; the message lists the module's ``RecMetricModule``
            attributes and how to name them (``RecMetricCallback(train=..., val=None)``, ``test=None``).
        ValueError: at ``setup`` of a fit, where ``train`` and ``val`` are one module (one name twice, or
            ``self.val_metrics = self.train_metrics``): each validation epoch would reset it and add the
            validation samples to it. Give validation a copy, ``self.train_metrics.clone(prefix="val/")``.
            At the start of a DDP fit (``on_train_start``, on every rank), where some rank has no batch of
            any validation dataloader and another has some (see above): the message names those ranks.

    Warns:
        UserWarning: at ``setup`` of a fit, where the ``train`` and ``val`` modules have one prefix
            (``clone()`` without ``prefix``, or none on either) and a metric and a task in common: they
            log the same keys, and Lightning's ``trainer.callback_metrics`` keeps the last value logged
            per key, so a monitor of such a key would read validation values for training ones.
        UserWarning: on rank 0 under DDP, at the first validation or test epoch of a dataloader whose sampler is a
            padding ``DistributedSampler`` (Lightning's default) over a set the ranks do not divide: the synced
            values would count the repeated samples twice. Use ``UnpaddedDistributedSampler``.
        UserWarning: at the end of a validation or test epoch in which every step on the rank returned ``None``
            (a ``validation_step`` without its ``return``): the module saw no sample, and its values are ``nan``.
        TypeError: a step whose output is neither ``None`` nor a dict with the module's columns,
            e.g. a ``training_step`` that returns only the loss (Lightning passes it as ``{"loss": loss}``);
            the message names ``output_key`` where a dict of the output holds the columns, and lists the
            output's keys where ``output_key`` is not one of them.

    Examples:
        >>> from torchmetrics_ext.integrations.lightning import RecMetricCallback
        >>> RecMetricCallback(train="train_metrics", val="val_metrics").val
        'val_metrics'
    """

    def __init__(
        self,
        train: str | None = "train_metrics",
        val: str | None = "val_metrics",
        output_key: str | None = None,
        *,
        test: str | None = _DEFAULT_TEST,
    ) -> None:
        super().__init__()
        self.train, self.val, self.output_key, self.test = train, val, output_key, test
        self._train_logged_at: int | None = None  # the training module's update count when last logged
        # the values last logged (host floats) and the update count they were computed at: resumed into callback_metrics
        self._train_values: tuple[int, dict[str, float]] | None = None
        # the training module was started afresh by `on_load_checkpoint` (its count restored, not its states)
        self._train_restarted = False
        self._eval = _EvalEpoch()  # the validation or test epoch under way
        self._accumulation_warned: set[tuple[int, int]] = set()  # (interval, factor) pairs warned of in this fit
        self._padding_warned: set[tuple[str, int]] = set()  # (stage, dataloader) whose padded sampler was warned of
        self._barebones = False  # the trainer of the run forbids logging: update, never compute (see `setup`)

    def __getstate__(self) -> dict[str, Any]:
        """The callback's attributes, and, pickled into a rank by ``ddp_spawn``, the user's line that spawned it.

        The ranks of ``strategy="ddp_spawn"`` run the hooks with no frame of the user's on their stack (the
        ``trainer.fit`` call is the parent's): the callback's warnings there named ``multiprocessing/process.py``.
        The line is taken here, in the parent (see :func:`~torchmetrics_ext.utilities.warnings.spawn_origin`), and
        the rank's warnings name it, as under ``strategy="ddp"``. Any other pickle or copy takes none.
        """
        state = dict(self.__dict__)
        state["_spawned_from"] = spawn_origin()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The callback's attributes; in a spawned rank, the user's line its warnings name (see ``__getstate__``)."""
        state = dict(state)
        note_spawned_from(state.pop("_spawned_from", None))
        self.__dict__.update(state)

    def _test_name(self, pl_module: pl.LightningModule) -> str | None:
        """The test module's attribute: ``None`` when ``test`` is the default name and that is no RecMetricModule.

        A model without such test metrics (no ``test_metrics``, or a ``MetricCollection`` of its
        own under that name) then runs ``trainer.test()`` as before the option existed (nothing
        logged by the callback); a name given otherwise must be a module (a typo is an error).
        """
        if self.test == _DEFAULT_TEST and not isinstance(getattr(pl_module, _DEFAULT_TEST, None), RecMetricModule):
            return None
        return self.test

    def _val_name(self, pl_module: pl.LightningModule) -> str | None:
        """The validation module's attribute: ``None`` for the default name on a model without validation.

        A model that has neither a ``val_metrics`` attribute nor a ``validation_step`` (Lightning
        runs no validation for it) is fitted as with ``val=None``; a model with a
        ``validation_step``, or a name given otherwise, must hold the module (a typo is an error).
        """
        if (
            self.val == _DEFAULT_VAL
            and not hasattr(pl_module, _DEFAULT_VAL)
            and not is_overridden("validation_step", pl_module)
        ):
            return None
        return self.val

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
        testing = all(name == self.test for name in names)  # the test stage's module
        example = "RecMetricCallback(..., test=None)" if testing else "RecMetricCallback(train=..., val=None)"
        raise AttributeError(
            f"RecMetricCallback(train={self.train!r}, val={self.val!r}, test={self.test!r}) reads the RecMetricModule "
            f"attributes of the LightningModule, but {what}. Name the attributes that hold them (`{owner}` has "
            f"{found or 'none'}), and None for a stage without one: e.g. `{example}`."
        )

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check every module this stage uses before the first step (one error naming all that are wrong).

        Then give each of them storages of its own where they are in shared memory (``ddp_spawn`` on
        CPU; see the class docstring). Lightning calls ``setup`` before it restores a checkpoint and
        before any step, and the copies keep the values.

        Nothing of an earlier run is kept: a callback reused for another fit (a fresh model, the
        next fold) logs that fit's epoch-end training values even where the earlier fit last logged
        at the same update count.
        """
        val = self._val_name(pl_module)
        names = {"fit": [self.train, val], "validate": [val], "test": [self._test_name(pl_module)]}.get(stage, [])
        wrong = [n for n in names if n is not None and not isinstance(getattr(pl_module, n, None), RecMetricModule)]
        if wrong:
            self._missing(pl_module, wrong)
        if stage == "fit":
            self._check_distinct(pl_module, val)
        self._barebones = bool(getattr(trainer, "barebones", False))
        used = [name for name in names if name is not None]
        if self._barebones and used:
            modules = ", ".join(f"`{type(pl_module).__name__}.{name}`" for name in used)
            _warn_rank_zero(
                f"RecMetricCallback: `Trainer(barebones=True)` disables logging (`self.log` logs nothing under it), "
                f"so the callback updates {modules} at every step but computes and logs nothing (no sync either). "
                f"Call their `compute()` after the run to read the values, or drop `barebones=True` to have them "
                "logged.",
                UserWarning,
            )
        if stage == "fit":  # a callback reused for another fit (a fresh model, say) logs it from its first epoch
            self._train_logged_at = None
            self._train_values = None
            self._train_restarted = False
            self._accumulation_warned = set()
            self._check_accumulation(trainer, pl_module)
        self._eval = _EvalEpoch()  # nothing kept from an earlier run (one interrupted mid-epoch, say)
        for name in names:
            if name is not None:
                unshare_memory(getattr(pl_module, name))

    def _check_distinct(self, pl_module: pl.LightningModule, val: str | None) -> None:
        """Refuse one module for training and validation; warn when two modules log the same keys."""
        if self.train is None or val is None:
            return
        train_module, val_module = getattr(pl_module, self.train), getattr(pl_module, val)
        if train_module is not val_module:
            _warn_same_keys(type(pl_module).__name__, (self.train, train_module), (val, val_module))
            return
        owner = type(pl_module).__name__
        if self.train == val:
            what = f"`{owner}.{self.train}` is both"
        else:
            what = f"`{owner}.{self.train}` and `{owner}.{val}` are"
        raise ValueError(
            f"RecMetricCallback(train={self.train!r}, val={val!r}): {what} one RecMetricModule for training and "
            "validation. The callback resets the validation module at each validation epoch and adds the "
            "validation samples to it, so the training values would restart at every validation and count "
            "validation samples. Give validation a module of its own: "
            f'`self.{val} = self.{self.train}.clone(prefix="val/")` (a copy), or `val=None`.'
        )

    def _check_accumulation(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> None:
        """Warn when ``compute_interval_steps`` is no multiple of an accumulation factor of the fit.

        The module counts training batches (its updates), while Lightning's logging step counts
        optimizer steps, ``accumulate_grad_batches`` batches each: an interval that is no multiple
        of it computes inside an accumulation, and where two computes fall in one optimizer step
        (any interval smaller than the accumulation) their rows share one logger step.

        The factors checked are the trainer's current one and every one a
        ``GradientAccumulationScheduler`` among its callbacks will set (it changes
        ``trainer.accumulate_grad_batches`` at the start of its epochs, after ``setup``); called
        again at each training epoch start, this also sees a factor changed by other means. Each
        (interval, factor) pair warns once per fit; nothing runs per step.
        """
        module = getattr(pl_module, self.train, None) if self.train is not None else None
        if not isinstance(module, RecMetricModule) or trainer is None:
            return
        factors: dict[int, str] = {}
        current = getattr(trainer, "accumulate_grad_batches", 1)
        if isinstance(current, int):
            factors[current] = ""
        for callback in getattr(trainer, "callbacks", []):
            if isinstance(callback, GradientAccumulationScheduler):
                for epoch, factor in sorted(callback.scheduling.items()):
                    factors.setdefault(factor, f" (set from epoch {epoch} by GradientAccumulationScheduler)")
        interval = module.compute_interval_steps
        for accumulate, where in factors.items():
            if accumulate <= 1 or interval % accumulate == 0 or (interval, accumulate) in self._accumulation_warned:
                continue
            self._accumulation_warned.add((interval, accumulate))
            _warn_rank_zero(
                f"RecMetricCallback: `{self.train}.compute_interval_steps={interval}` counts training batches, and "
                f"`accumulate_grad_batches={accumulate}`{where} makes {accumulate} batches one optimizer step (one "
                f"logging step): the module computes inside an accumulation, and computes that fall in one optimizer "
                f"step are written at the same logging step. Use a multiple of {accumulate} "
                f"(`compute_interval_steps={accumulate * max(1, round(interval / accumulate))}`: every "
                f"{max(1, round(interval / accumulate))} optimizer step(s)).",
                PossibleUserWarning,
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Put the restored training values back in ``trainer.callback_metrics``; keep the logged-at count if it holds.

        Lightning restores the model (the module's update count with it) and then this callback's
        state, both before the fit's first batch, and starts ``trainer.callback_metrics`` empty. The
        values last logged before the checkpoint go back there (as float64 tensors on the model's
        device) where the module was restored at or after the count they were computed at, as the
        uninterrupted fit holds them until its next compute: a ``ModelCheckpoint`` or
        ``EarlyStopping`` monitoring a training key then finds it before the resumed fit's first
        compute. Only the keys the module reports now go back: a key of a metric, window, throughput
        or prefix no longer configured (a resume with a changed configuration: another ``prefix``,
        a metric removed with ``strict_loading = False``, no ``window_size``) would stand for values
        this fit never logs, until the fit's end; the others are those of the states it resumes. Nor do
        the keys of what the restore started afresh: a metric whose states the checkpoint lacked
        (``strict_loading = False``: one rebuilt with settings its states are named after) and the
        window keys of a window changed since the checkpoint (it starts empty): their values were
        computed from states the module no longer holds.
        The keys are read from the module's configuration (no compute, no sync); a dict-valued
        metric's entries are taken whatever their names. A module restored without its count
        (added since the checkpoint: it starts from 0) gets none, and so does one that this callback
        started afresh on load (one without this rank's states, one of another number of ranks that
        could not be merged: see :meth:`on_load_checkpoint`), whose count was restored but whose states
        were not. One whose lifetime was merged from another number of ranks gets its lifetime keys
        back, not its window or throughput keys (those restarted).
        The logged-at count tells that no batch has come since the module was last logged: it
        holds only where the module's count is that one (such a module logs its first epoch end).
        """
        self._check_every_rank_validates(trainer, pl_module)
        module = self._module(pl_module, self.train)
        restored, self._train_values = self._train_values, None
        restarted, self._train_restarted = self._train_restarted, False
        if module is not None and restored is not None and restored[0] <= module._step and not restarted:
            keys = ModuleKeys(module, resumed=True)  # no key of a metric or window the load started afresh
            kept = {key: value for key, value in restored[1].items() if key in keys}
            self._train_values = (restored[0], kept) if kept else None
            if trainer is not None and not self._barebones:
                device = pl_module.device
                trainer.callback_metrics.update(
                    {key: torch.tensor(value, dtype=torch.float64, device=device) for key, value in kept.items()}
                )
        if module is None or module._step != self._train_logged_at:
            self._train_logged_at = None

    def _check_every_rank_validates(self, trainer: pl.Trainer | None, pl_module: pl.LightningModule) -> None:
        """Refuse a fit in which some rank has no validation batch at all and another has some (every rank raises).

        Lightning runs no validation hook on a rank whose validation dataloaders are all empty (a
        validation set smaller than the world under ``UnpaddedDistributedSampler``), so the other ranks'
        sync of the validation module at the epoch end would find no partner there: the run hangs, or
        that rank's next training step's gradient all-reduce meets their gather and gloo aborts. Lightning
        loads the validation dataloaders before ``on_train_start`` (where the first epoch validates), so
        each rank's count is known there: one ``all_gather`` of whether each rank has a batch. Dataloaders
        loaded later (``reload_dataloaders_every_n_epochs``, a first validation in a later epoch) and
        ``trainer.validate``/``test``, whose dataloaders are loaded inside the loop that skips such a rank,
        are not checked.
        """
        ranks = _world()
        if trainer is None or self._barebones or ranks is None:
            return
        _, world = ranks
        val = self._val_name(pl_module)
        loop: Any = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "val_loop", None)
        # every condition is the same on every rank: all of them gather, or none
        if val is None or getattr(loop, "_combined_loader", None) is None:
            return
        has = torch.tensor([float(sum(loop.max_batches) > 0)], dtype=torch.float64, device=pl_module.device)
        gathered = [torch.zeros_like(has) for _ in range(world)]
        dist.all_gather(gathered, has)
        flags = torch.cat(gathered).tolist()
        empty = [rank for rank, flag in enumerate(flags) if flag == 0]
        if not empty or len(empty) == world:  # every rank validates, or none does (Lightning skips it everywhere)
            return
        raise ValueError(
            f"RecMetricCallback: rank(s) {empty} of {world} have no batch of any validation dataloader (e.g. "
            f"fewer validation samples than ranks under UnpaddedDistributedSampler, or a limit_val_batches "
            f"that leaves them none). Lightning runs no validation hook on such a rank, so "
            f"`{type(pl_module).__name__}.{val}`'s sync at each validation epoch end would find no partner "
            f"there: the fit would hang, or abort on a collective mismatch. Give every rank a validation sample "
            f"(at least {world} samples; UnpaddedDistributedSampler gives rank r the samples r, r + {world}, ...), "
            f"or fit with `RecMetricCallback(val=None)`."
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the epoch's accumulation factor against the interval (see ``_check_accumulation``)."""
        self._check_accumulation(trainer, pl_module)

    def _model_out(self, outputs: Any, module: RecMetricModule, stage: str) -> Mapping[str, Tensor]:
        out = outputs if self.output_key is None or not isinstance(outputs, Mapping) else outputs.get(self.output_key)
        where = "" if self.output_key is None else f" under {self.output_key!r}"
        wanted = [key for t in module.tasks for key in (t.prediction_name, t.label_name)]
        training = stage == "training"
        returns = "{'loss': loss, **model_out}" if training else "model_out"
        if not isinstance(out, Mapping) or not any(key in out for key in wanted):
            got = f"a dict with keys {sorted(out)}" if isinstance(out, Mapping) else type(out).__name__
            if self.output_key is not None and isinstance(outputs, Mapping) and self.output_key not in outputs:
                # the step returned a dict, without the key the callback was told to read it under
                close = difflib.get_close_matches(str(self.output_key), [str(k) for k in outputs], n=1)
                got = f"a dict without that key: its keys are {sorted(outputs, key=str)}" + (
                    f" (did you mean RecMetricCallback(output_key={close[0]!r})?)" if close else ""
                )
            columns = ", ".join(repr(k) for k in wanted[:4]) + (", ..." if len(wanted) > 4 else "")
            # the columns one level down, in a dict of the output: that key is the `output_key` to give
            nested = [
                k
                for k, v in (out.items() if isinstance(out, Mapping) else ())
                if isinstance(v, Mapping) and any(key in v for key in wanted)
            ]
            if nested:
                got += f"; `outputs[{nested[0]!r}]` holds them: RecMetricCallback(output_key={nested[0]!r}) reads it"
            raise WrongTypeError(
                f"RecMetricCallback: the {stage} step must return the model output dict{where} with the columns "
                f"the module reads ({columns}), e.g. `return {returns}`; got {got}"
                + (" (Lightning passes a step that returns only the loss as {'loss': loss})." if training else ".")
            )
        return out

    def _log(
        self, pl_module: pl.LightningModule, module: RecMetricModule, suffix: str = "", **options: Any
    ) -> dict[str, Tensor]:
        """``log_dict(module.compute())``, each key followed by ``suffix``; the values logged (none under barebones)."""
        if self._barebones:  # logging is off: computing (and syncing) the values would be wasted
            return {}
        values = {f"{key}{suffix}": value for key, value in module.compute().items()}
        self._quiet(values)
        pl_module.log_dict(values, sync_dist=False, **options)
        return values

    def _quiet(self, keys: Sequence[str] | Mapping[str, Any]) -> None:
        """Silence Lightning's advice to log these keys with ``sync_dist=True``, until ``teardown``.

        The module's ``compute()`` has synced the values, so the advice (one ``PossibleUserWarning``
        per key under DDP) does not apply to them. Lightning gives it when it reduces the epoch's
        values, after the hook that logged them has returned, so a ``catch_warnings`` block around
        ``log_dict`` misses it: the filter stays, matching exactly ``self.log('<key>', ...`` of these
        keys (any other key, the user's own, still gets the advice). Adding a filter makes Python
        forget the warnings it has shown, so one is added only for keys not silenced yet.
        """
        quiet = self.__dict__.setdefault("_quiet_keys", set())
        new = [key for key in keys if key not in quiet]
        if not new:
            return
        names = "|".join(re.escape(repr(key)) for key in new)  # Lightning writes the key with !r
        # warnings compiles the message ignoring case: the keys themselves are matched with it
        message = rf"It is recommended to use `self\.log\((?-i:{names}), \.\.\., sync_dist=True\)`"
        warnings.filterwarnings("ignore", message=message, category=PossibleUserWarning)
        self.__dict__.setdefault("_quiet_filters", []).append(warnings.filters[0])
        quiet.update(new)

    def _unquiet(self) -> None:
        """Remove the filters ``_quiet`` added (the run is over: nothing of it is reduced any more)."""
        filters = cast("list[Any]", warnings.filters)  # a list (typeshed says Sequence)
        for entry in self.__dict__.pop("_quiet_filters", []):
            if entry in filters:  # a ``catch_warnings`` around the run may have dropped it already
                filters.remove(entry)
        self.__dict__.pop("_quiet_keys", None)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the warning filters of the run's keys (see ``_quiet``)."""
        self._unquiet()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Remove the warning filters of the run's keys: Lightning calls no ``teardown`` after an exception."""
        self._unquiet()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Update the training module; log it every ``compute_interval_steps`` batches (not optimizer steps).

        A step that returned ``None`` (a skipped batch, or a manual-optimisation step without
        metrics; the callback receives an empty dict) adds no sample but counts as a step, as an
        ``update`` with empty columns does: every rank counts every batch, so under DDP all of them
        reach each ``compute()`` (a collective) together, whichever of their steps returned ``None``.
        """
        module = self._module(pl_module, self.train)
        if module is None:
            return
        if outputs is None or (isinstance(outputs, Mapping) and not outputs):
            module._empty_step()
        else:
            module.update(self._model_out(outputs, module, "training"))
        if module.should_compute() and not self._barebones:
            values = module.compute()  # on every rank: the module syncs
            # Lightning's own lists of a value `self.log` would write: for monitors, and of what went to the loggers
            trainer.callback_metrics.update(values)
            trainer.logged_metrics.update(values)
            scalars = {key: float(value) for key, value in values.items()}
            step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step Lightning logs this batch at
            row = {**scalars, "epoch": trainer.current_epoch}  # as every row Lightning writes holds it
            for logger in trainer.loggers:  # rank-zero only, as Lightning's loggers are
                logger.log_metrics(dict(row), step=step)  # a copy each: a logger may edit its dict
            self._train_logged_at = module._step
            self._train_values = (module._step, dict(scalars))  # a copy: a logger may edit its dict

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the training module's values at the end of the epoch (unless its last step just did)."""
        module = self._module(pl_module, self.train)
        if module is not None and module._step != self._train_logged_at:
            values = self._log(pl_module, module)
            self._train_logged_at = module._step
            if values:  # one device-to-host copy for all of them
                scalars = torch.stack([value.detach().double().reshape(()) for value in values.values()]).tolist()
                self._train_values = (module._step, dict(zip(values, scalars, strict=True)))

    def _eval_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str | None) -> None:
        """Reset the stage's module; with several dataloaders, give each other one a copy of it."""
        module = self._module(pl_module, name)
        self._eval = _EvalEpoch()
        if module is None:
            return
        module.reset()
        if trainer.sanity_checking:
            return
        self._check_padding(trainer, pl_module, name)
        counts = list(trainer.num_test_batches if trainer.testing else trainer.num_val_batches)
        modules = {0: module}
        if len(counts) > 1:
            counts = _known_counts(counts, _stage_dataloaders(trainer))
            modules.update({i: copy.deepcopy(module) for i in range(1, len(counts))})
            fewest, most = _batch_counts_over_ranks(counts, pl_module.device)
            # every rank reaches the last batch of every dataloader: compute each there (in order)
            at_last_batch = all(1 <= n < float("inf") for n in fewest)
            self._eval = _EvalEpoch(modules, counts, most, at_last_batch)
        else:
            self._eval = _EvalEpoch(modules, counts)
        self._eval.owner = f"`{type(pl_module).__name__}.{name}`"
        self._eval.stage = "test" if trainer.testing else "validation"

    def _check_padding(self, trainer: pl.Trainer, pl_module: pl.LightningModule, name: str | None) -> None:
        """Warn (rank 0, once per stage and dataloader) of an evaluation dataloader whose sampler repeats samples.

        Under DDP Lightning gives an evaluation dataloader PyTorch's ``DistributedSampler``, which pads
        the last round with repeated samples: the synced values would count them twice, without a word.
        With ``use_distributed_sampler=False`` a plain ``SequentialSampler``/``RandomSampler`` stays, and
        every rank reads the whole dataset: each sample counted once per rank (unless each rank's dataset
        holds other samples, which the callback cannot see: the warning says so).
        """
        if trainer.world_size < 2 or not trainer.is_global_zero:
            return
        stage = "test" if trainer.testing else "validation"
        loaders = _stage_dataloaders(trainer)
        counts = list(trainer.num_test_batches if trainer.testing else trainer.num_val_batches)
        for i, size, total in _padded_samplers(loaders):
            batches = sized_len(loaders[i]) if loaders is not None else None
            if i < len(counts) and batches is not None and counts[i] < batches:
                continue  # `limit_*_batches` stops before the last batches, where the repeated samples are
            if (stage, i) in self._padding_warned:
                continue
            self._padding_warned.add((stage, i))
            repeated = total - size
            warn_at_user(
                f"RecMetricCallback: {stage} dataloader {i} has a DistributedSampler that pads its {size} samples to "
                f"{total} over {trainer.world_size} ranks, so `{type(pl_module).__name__}.{name}` counts {repeated} "
                f"sample(s) twice and its values are not those of the {stage} set. Give the dataloader "
                f"`sampler=UnpaddedDistributedSampler(dataset)` (torchmetrics_ext.integrations), which gives every "
                f"sample to exactly one rank.",
                UserWarning,
            )
        world = trainer.world_size
        for i, size, sampler in _unsharded_samplers(loaders):
            if (stage, i) in self._padding_warned:
                continue
            self._padding_warned.add((stage, i))
            warn_at_user(
                f"RecMetricCallback: {stage} dataloader {i} reads its {size} samples with a {sampler}, not a "
                f"DistributedSampler (`Trainer(use_distributed_sampler=False)`), so each of the {world} ranks "
                f"reads all of them: unless each rank's dataset holds other samples, "
                f"`{type(pl_module).__name__}.{name}` counts every sample {world} times (its counts and sums "
                f"of weights are {world} times the {stage} set's; ratios such as NE, AUC or CTR are not changed) "
                f"and every rank does the whole set's work. Give the dataloader "
                f"`sampler=UnpaddedDistributedSampler(dataset)` (torchmetrics_ext.integrations), which gives every "
                f"sample to exactly one rank.",
                UserWarning,
            )

    def _eval_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch_idx: int, dataloader_idx: int
    ) -> None:
        """Update the dataloader's module; log its values after its last batch (several dataloaders)."""
        module = self._eval.modules.get(dataloader_idx)
        if module is None:
            return
        eval_ = self._eval
        eval_.steps += 1
        if outputs is None or (isinstance(outputs, Mapping) and not outputs):
            module._empty_step()  # a step that returned None (Lightning allows it): no sample, as in training
        else:
            module.update(self._model_out(outputs, module, "test" if trainer.testing else "validation"))
            eval_.returned += 1
        if eval_.at_last_batch and batch_idx + 1 == eval_.counts[dataloader_idx]:
            # logged in the step, Lightning adds the dataloader's suffix and keeps the values in its dict
            self._log(pl_module, module, on_step=False, on_epoch=True, batch_size=1)
            eval_.logged.add(dataloader_idx)

    def _eval_epoch_end(self, pl_module: pl.LightningModule) -> None:
        """Log the values of every dataloader not logged yet; free the copies."""
        eval_, self._eval = self._eval, _EvalEpoch()
        if eval_.steps and not eval_.returned and not self._barebones:
            # a `validation_step` without its `return`: every value is nan, and the metrics' own warning
            # (labels of one class, or no weight) does not say why
            stage = eval_.stage
            warn_at_user(
                f"RecMetricCallback: every {stage} step of this epoch ({eval_.steps} on this rank) returned None (or "
                f"an empty dict), so {eval_.owner} saw no sample and its values are nan. Return the model output "
                f"dict from the `{stage}_step` (`return model_out`), or build the callback with "
                f"{'test' if stage == 'test' else 'val'}=None for a model without {stage} metrics.",
                UserWarning,
            )
        if len(eval_.counts) == 1:
            self._log(pl_module, eval_.modules[0])
            return
        for i, module in eval_.modules.items():
            if i not in eval_.logged and eval_.most[i] > 0:
                self._log(pl_module, module, suffix=f"/dataloader_idx_{i}", add_dataloader_idx=False)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the validation module afresh (and a copy per other dataloader)."""
        self._eval_epoch_start(trainer, pl_module, self._val_name(pl_module))

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Update the dataloader's validation module from the step's output."""
        if not trainer.sanity_checking:
            self._eval_batch_end(trainer, pl_module, outputs, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the validation module's values over the whole validation set (each dataloader's own)."""
        if not trainer.sanity_checking:
            self._eval_epoch_end(pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the test module afresh (and a copy per other dataloader)."""
        self._eval_epoch_start(trainer, pl_module, self._test_name(pl_module))

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Update the dataloader's test module from the step's output."""
        self._eval_batch_end(trainer, pl_module, outputs, batch_idx, dataloader_idx)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the test module's values over the whole test set (each dataloader's own)."""
        self._eval_epoch_end(pl_module)

    # ------------------------------------------------------------------ checkpoints

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint: the class and its attribute names.

        Examples:
            >>> from torchmetrics_ext.integrations.lightning import RecMetricCallback
            >>> RecMetricCallback(train="aux_metrics", val=None, test=None).state_key
            "RecMetricCallback{'train': 'aux_metrics', 'val': None, 'test': None, 'output_key': None}"
        """
        return self._generate_state_key(train=self.train, val=self.val, test=self.test, output_key=self.output_key)

    def state_dict(self) -> dict[str, Any]:
        """When the callback last logged the training module, and what it logged.

        ``train_logged_at``: the module's update count at its last log (``None``: not logged in this
        fit, or not since a resume that did not follow a log right away); ``train_values_at`` and
        ``train_values``: the update count of the values last logged (interval compute or epoch end,
        also one before a resume) and those values as Python floats (``None`` where none was logged).

        Examples:
            >>> from torchmetrics_ext.integrations.lightning import RecMetricCallback
            >>> RecMetricCallback().state_dict()
            {'train_logged_at': None, 'train_values_at': None, 'train_values': None}
        """
        at, values = (None, None) if self._train_values is None else self._train_values
        return {
            "train_logged_at": self._train_logged_at,
            "train_values_at": at,
            "train_values": None if values is None else dict(values),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (Lightning calls it on resume, after the model's restore).

        The count is kept, and the values go back in ``trainer.callback_metrics``, at the fit's
        start only where the restored training module allows (see :meth:`on_train_start`). A state
        without the values (saved by an earlier version) loads with none.

        Raises:
            ValueError: ``state_dict`` is not what :meth:`state_dict` saves; the callback is left as it was.

        Examples:
            >>> from torchmetrics_ext.integrations.lightning import RecMetricCallback
            >>> callback = RecMetricCallback()
            >>> values = {"train/ne/click": 0.9}
            >>> callback.load_state_dict({"train_logged_at": 14, "train_values_at": 14, "train_values": values})
            >>> callback.state_dict()
            {'train_logged_at': 14, 'train_values_at': 14, 'train_values': {'train/ne/click': 0.9}}
            >>> callback.load_state_dict({"train_logged_at": 14})  # an earlier version's state
            >>> callback.state_dict()["train_values"] is None
            True
        """
        self._train_logged_at, self._train_values = _callback_state(state_dict)

    def _resumed(self, pl_module: pl.LightningModule) -> dict[str, RecMetricModule]:
        """The modules a resumed fit continues: the training one (validation starts afresh at each epoch)."""
        module = self._module(pl_module, self.train)
        return {} if module is None or self.train is None else {self.train: module}

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Store the training module's states of every rank but rank 0 (one object all-gather under DDP).

        Rank 0's states are those of the model's ``state_dict`` in the checkpoint (Lightning writes
        rank 0's), so its entry holds ``None`` under the module's name rather than a second copy: in
        one process the checkpoint holds the states once. Under a strategy that saves the model its
        own way (FSDP, DeepSpeed, ``ModelParallelStrategy``: any whose ``save_checkpoint`` or
        ``lightning_module_state_dict`` is not Lightning's base one), the model's ``state_dict`` may
        hold another rank's metric states, so rank 0's entry holds its own states too. The
        validation module is left out: it starts afresh at each validation epoch, so no resume reads
        its states.

        Saved where the trainer has several ranks but no process group, i.e. in the main process
        after a ``ddp_spawn`` fit (``trainer.save_checkpoint`` there), the model holds rank 0's
        states alone (Lightning loads rank 0's ``state_dict`` back into it) and the other ranks'
        are gone: the checkpoint then holds ``None`` for each of them, so that a resume starts the
        training module afresh, with a warning, rather than take rank 0's share for the whole; the
        save warns too.

        A checkpoint saved during the fit holds every rank's states, so a resume on another number of
        ranks carries the lifetime values: see :meth:`on_load_checkpoint`.

        Several callbacks (one per training module, of other attribute names) add their modules to
        the same entry: each rank's dict holds every callback's modules.
        """
        rank, world = _world() or (0, 1)
        resumed = self._resumed(pl_module)
        # rank 0 relies on the model's state_dict only where that is its own (see _model_state_is_rank_zeros)
        copy_rank_zero = world > 1 and not _model_state_is_rank_zeros(trainer)
        local = {
            name: None if rank == 0 and not copy_rank_zero else module.state_dict() for name, module in resumed.items()
        }
        ranks = getattr(trainer, "world_size", 1)
        if world == 1 and ranks > 1:  # the main process of a spawn launch: the ranks have ended
            for name in resumed:
                warn_at_user(
                    f"RecMetricCallback: saving a checkpoint outside the {ranks} ranks of the fit (in the main process "
                    f"after `strategy='ddp_spawn'`): the model's `{name}` holds rank 0's metric states alone, so a "
                    f"resume from it starts `{name}` afresh. Save checkpoints during the fit (ModelCheckpoint) to "
                    "resume the metrics.",
                )
            checkpoint["rec_metric_modules"] = _merge_per_rank(
                checkpoint.get("rec_metric_modules"), [local] + [None] * (ranks - 1)
            )
            return
        per_rank: list[Any] = [None] * world
        if world > 1:
            dist.all_gather_object(per_rank, local)
        else:
            per_rank = [local]
        checkpoint["rec_metric_modules"] = _merge_per_rank(checkpoint.get("rec_metric_modules"), per_rank)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Give each rank back its own training module states when ``trainer.fit`` resumes.

        Rank 0 keeps what Lightning loaded from the model's ``state_dict`` (its own states) where its
        entry is ``None``; every other rank, and rank 0 where its entry holds states (a strategy that
        saves the model its own way, see :meth:`on_save_checkpoint`), loads its entry of
        ``checkpoint["rec_metric_modules"]``. Checkpoints of earlier
        versions, which held a copy for rank 0 too and the validation module's states, load as
        before (the validation states are not read: that module starts afresh at each epoch).

        ``trainer.validate``/``test``/``predict(ckpt_path=...)`` call this hook too; they read nothing
        back: the validation and test modules start afresh at each epoch start, the training module
        is not used, so any checkpoint serves them.

        A checkpoint without the entry (saved without this callback) holds rank 0's states alone,
        which Lightning has loaded into every rank: under DDP the training module starts afresh,
        with a warning, rather than count rank 0's samples once per rank.

        A checkpoint whose entry lacks the training module (saved while the callback did not manage
        it, e.g. ``train=None``, or under another attribute) follows the LightningModule's
        ``strict_loading``, as Lightning's own restore does: ``True`` raises a ``RuntimeError``
        naming the module; ``False`` keeps what Lightning loaded into it from the model's
        ``state_dict`` in one process (the only rank's states, or the module as built when the
        checkpoint has none) and starts it afresh, with a warning, under DDP (rank 0's alone).

        **Another number of ranks** (a checkpoint of 8 ranks resumed on 4: elastic jobs, preempted
        clusters): where the checkpoint holds every saved rank's states of the module, the new rank 0
        loads each saved rank's states into a scratch copy of the module (as :meth:`load_state_dict`
        loads them, ``strict_loading`` included) and merges every metric's lifetime into its own with
        the metric's ``merge_state`` (each state's reduction: sums added, ``max``/``min``, samples
        joined); every other rank starts empty. The synced lifetime values then equal one process fed
        every sample before the checkpoint and since, and the values last logged before it go back
        (their lifetime keys, see :meth:`on_train_start`). Every window restarts, on every rank (a
        window of another world's steps has no meaning here), with a warning ("lifetime values carried
        from 8 ranks onto 4; windows restart"). The throughput's ``total_examples`` carries (summed onto
        rank 0); its rates and window restart, so the rates are approximate around the resume: they time
        the steps since it (the first step after the resume restarts the clock, as after any load; the
        warm-up is not repeated) while ``total_examples`` counts the whole run. The
        update count is the one Lightning restored (saved rank 0's), so the compute cadence carries on.
        Rank 0 holds every saved rank's states during the merge (the checkpoint dict, which every rank
        loaded, holds them already). Rank 0 says whether the merge succeeded (one object broadcast);
        where it did not (an entry that does not load, a metric whose states cannot be merged), every
        rank starts the module afresh, with a warning naming the reason. A module lacking from any saved
        rank's entry follows ``strict_loading`` as above (``True`` raises; ``False``: afresh, with a warning).

        A checkpoint saved in the main process after a ``ddp_spawn`` fit (rank 0's states alone; see
        :meth:`on_save_checkpoint`), at this number of ranks or another, starts the training module
        afresh, with a warning.

        A training module started afresh here keeps the update count restored with the model (its
        compute cadence carries on), but not the values last logged before the checkpoint: they do
        not go back in ``trainer.callback_metrics`` (see :meth:`on_train_start`), whose training keys
        then wait for the module's first compute over the resumed fit's samples.

        Under DDP, rank 0 warns of every other metric of the ``LightningModule`` (outside its
        ``RecMetricModule`` s) that the checkpoint holds states of (a ``Windowed`` or ``Throughput``, whose
        states are saved by default, a metric after ``persistent(True)``): Lightning has loaded rank 0's
        states into it on every rank, so its synced values count rank 0's earlier samples once per rank.
        """
        if trainer is not None and trainer.state.fn != TrainerFn.FITTING:
            return
        per_rank = checkpoint.get("rec_metric_modules")
        rank, world = _world() or (0, 1)
        if world > 1 and rank == 0:
            _warn_restored_from_rank_zero(pl_module, checkpoint, world)
        if per_rank is None:
            if world > 1:
                for name, module in self._resumed(pl_module).items():
                    warn_at_user(
                        f"RecMetricCallback: the checkpoint holds no per-rank metric states (saved without this "
                        f"callback): its `{name}` states are rank 0's alone; `{name}` starts afresh.",
                    )
                    self._restart(module)
            return
        strict = getattr(pl_module, "strict_loading", True)
        if 0 < len(per_rank) != world and all(entry is not None for entry in per_rank[1:]):
            self._load_other_world(pl_module, per_rank, world, rank, strict)
            return
        complete = len(per_rank) == world and all(entry is not None for entry in per_rank)
        for name, module in self._resumed(pl_module).items():
            if not complete:
                if len(per_rank) != world:
                    why = f"holds metric states of {len(per_rank)} rank(s), this run has {world}"
                else:
                    why = "holds rank 0's metric states alone (saved in ddp_spawn's main process, after the fit)"
                warn_at_user(f"RecMetricCallback: the checkpoint {why}; `{name}` starts afresh.")
                self._restart(module)
            elif name not in per_rank[rank]:
                self._without_saved_states(name, module, sorted(per_rank[rank]), strict, restart=world > 1)
            elif per_rank[rank][name] is not None:  # None: the model's state_dict, which Lightning loaded
                # as Lightning loads the model: `strict_loading = False` lets a metric added since start afresh
                module.load_state_dict(per_rank[rank][name], strict=strict)

    def _load_other_world(
        self, pl_module: pl.LightningModule, per_rank: Sequence[Any], world: int, rank: int, strict: bool
    ) -> None:
        """Resume the training module's lifetime from a complete checkpoint of another number of ranks.

        Every saved rank's entry is there (rank 0's ``None``, or its module's ``None``: the model's
        ``state_dict``, which Lightning has loaded into every rank). Rank 0 merges every saved rank's
        lifetime states into its module (``RecMetricModule._fold_saved_ranks``: each metric's own
        ``merge_state``), every other rank starts its module empty: the synced lifetime values then
        cover every sample of the saved fit and of this one. Windows restart on every rank. Rank 0
        says whether the merge succeeded (one object broadcast): where it did not, every rank starts
        the module afresh, with a warning naming the reason.
        """
        saved = len(per_rank)
        for name, module in self._resumed(pl_module).items():
            entries = list(per_rank)  # rank 0's entry may be None: the model's state_dict, as its module's None
            if any(entry is not None and name not in entry for entry in entries):
                lacking = next(sorted(entry) for entry in entries if entry is not None and name not in entry)
                self._without_saved_states(name, module, lacking, strict, restart=True)
                continue
            states = [None if entry is None else entry[name] for entry in entries]
            problem = None
            if any(s is None for s in states[1:]):  # only rank 0 saves None (its states are the model's)
                problem = "a rank other than 0 saved no states of it"
            elif rank == 0:
                try:
                    module._fold_saved_ranks(states, strict=strict)
                except Exception as error:  # said to every rank below: none may wait in the broadcast alone
                    problem = f"{type(error).__name__}: {error}"
            if world > 1:
                box = [problem]
                dist.broadcast_object_list(box, src=0)
                problem = box[0]
            if problem is not None:
                warn_at_user(
                    f"RecMetricCallback: the checkpoint holds metric states of {saved} rank(s), this run has "
                    f"{world}, and they cannot be merged ({problem}); `{name}` starts afresh.",
                )
                self._restart(module)
                continue
            if rank != 0:  # empty lifetimes (and windows), marked as rank 0's: the lifetimes resumed, the windows not
                module._fold_saved_ranks([])
            throughput = (
                "; its throughput's total_examples carries, its rates start again"
                if module.throughput is not None
                else ""
            )
            warn_at_user(
                f"RecMetricCallback: lifetime values carried from {saved} ranks onto {world}; windows restart "
                f"(`{name}`{throughput}).",
            )

    def _without_saved_states(
        self,
        name: str,
        module: RecMetricModule,
        held: list[str],
        strict: bool,
        restart: bool,
    ) -> None:
        """A checkpoint whose per-rank entry lacks ``name`` (``held``: the names it holds).

        ``strict_loading`` (``strict``) raises a ``RuntimeError``; otherwise, where what Lightning loaded
        into the module is rank 0's alone (``restart``: several ranks saved or resume), it starts afresh,
        with a warning.
        """
        if strict:
            raise RuntimeError(
                f"RecMetricCallback: the checkpoint holds no per-rank states of `{name}` (saved while the "
                f"callback did not manage it, or added since; it holds {held}). To resume "
                "without them, set `self.strict_loading = False` in the LightningModule."
            )
        if restart:
            warn_at_user(
                f"RecMetricCallback: the checkpoint holds no per-rank states of `{name}`: what Lightning "
                f"loaded into it is rank 0's alone; `{name}` starts afresh.",
            )
            self._restart(module)

    def _restart(self, module: RecMetricModule) -> None:
        """Start the training module afresh on load; its values last logged are then not put back (``on_train_start``).

        ``reset()`` keeps the update count Lightning restored from the model's ``state_dict`` (so
        the compute cadence carries on), which alone would let those values through. The throughput is
        reset too: with ``key_style="torchrec"`` the module's ``reset()`` keeps it counting (as
        TorchRec's does), and it holds what Lightning loaded into every rank, rank 0's examples, which
        the synced ``total_examples`` would count once per rank.
        """
        module.reset()
        if module.throughput is not None:  # reset() keeps it with key_style="torchrec"
            module.throughput.reset()
        self._train_restarted = True


def _warn_restored_from_rank_zero(pl_module: pl.LightningModule, checkpoint: Mapping[str, Any], world: int) -> None:
    """Warn of the metrics outside every ``RecMetricModule`` whose states Lightning restored from rank 0's checkpoint.

    Lightning writes the checkpoint from rank 0 and loads its ``state_dict`` into every rank: a metric
    whose states are saved (a ``Windowed``, a ``Throughput``, any metric after ``persistent(True)``) then
    holds rank 0's states on every rank, and its synced values count rank 0's samples before the
    checkpoint once per rank and none of the other ranks'. The callback saves and gives back each
    rank's own states only for the training module; such a metric cannot tell another rank's states
    from its own, so it is said here (rank 0, at each resume), never changed.
    """
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping) or not state:
        return
    keys = [key for key in state if not key.endswith("._extra_state")]  # settings, not samples
    modules = [name for name, m in pl_module.named_modules() if isinstance(m, RecMetricModule)]
    found: list[str] = []
    for name, metric in pl_module.named_modules():
        if not name or not isinstance(metric, torchmetrics.Metric):
            continue
        if any(name == owner or name.startswith(f"{owner}.") for owner in [*modules, *found]):
            continue  # a module's metric (the callback's concern), or inside one already named (a wrapped metric)
        if any(key.startswith(f"{name}.") for key in keys):
            found.append(name)
    if found:
        owner = type(pl_module).__name__
        named = ", ".join(f"`{owner}.{name}`" for name in found)
        warn_at_user(
            f"RecMetricCallback: {named} {'was' if len(found) == 1 else 'were'} restored from the checkpoint's "
            f"states on every rank: Lightning saves the checkpoint on rank 0, so those states are rank 0's alone, and "
            f"the synced values count rank 0's samples before the checkpoint {world} times and none of the other "
            f"ranks'. Hold such metrics in a RecMetricModule "
            f"that the callback updates (it saves every rank's states and gives each its own back), or leave them "
            f"out of the checkpoint with `persistent(False)` (a resume then starts them afresh).",
            UserWarning,
        )


def _warn_same_keys(owner: str, train: tuple[str, RecMetricModule], val: tuple[str, RecMetricModule]) -> None:
    """Warn when the training and validation modules log under the same keys (no prefix, or one prefix).

    Lightning keeps one value per key in ``trainer.callback_metrics``: the validation value would
    replace the training one there, and ``ModelCheckpoint``/``EarlyStopping`` monitoring that key would
    read whichever was logged last.
    """
    (train_name, train_module), (val_name, val_module) = train, val
    if train_module.prefix != val_module.prefix or train_module.key_style != val_module.key_style:
        return
    tasks = [task.name for task in train_module.tasks if task.name in {t.name for t in val_module.tasks}]
    # a metric of both modules, with an entry of its value both log (`rk.ndcg@10`: a dict-valued metric's key
    # names its entry, and two settings of one name, `ks=[10]` and `ks=[5]`, log no key in common)
    common = [
        (name, entry)
        for name in train_module.metric_names
        if name in set(val_module.metric_names)
        for entry in _value_entries(train_module, name)
        if entry in _value_entries(val_module, name)
    ]
    if not common or not tasks:
        return
    example = train_module._key(*common[0], tasks[0], window=False)
    prefix = f"prefix {train_module.prefix!r}" if train_module.prefix else "no prefix"
    _warn_rank_zero(
        f"RecMetricCallback: `{owner}.{train_name}` and `{owner}.{val_name}` both have {prefix}, so they log the "
        f"same keys (e.g. {example!r}): the validation values replace the training ones in "
        "`trainer.callback_metrics`, and a `ModelCheckpoint`/`EarlyStopping` monitoring such a key reads whichever "
        f"was logged last. Give validation its own prefix: `self.{val_name} = self.{train_name}.clone"
        '(prefix="val/")`.',
        UserWarning,
    )
