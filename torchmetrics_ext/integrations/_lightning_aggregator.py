"""``AggregatorCheckpoint``: each rank's ``MetricsAggregator`` states in Lightning's checkpoint, and back on resume.

Imported through :mod:`torchmetrics_ext.integrations.lightning` (which needs ``lightning``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch.distributed as dist

from torchmetrics_ext.aggregation import MetricsAggregator
from torchmetrics_ext.utilities.distributed import _world
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import warn_at_user

CHECKPOINT_KEY = "metrics_aggregators"  # checkpoint[CHECKPOINT_KEY][rank] = {entry name: aggregator.state_dict()}


def _held(pl_module: pl.LightningModule, attribute: str) -> dict[str, MetricsAggregator]:
    """The aggregators ``pl_module.<attribute>`` holds, by their entry names in the checkpoint.

    A ``MetricsAggregator`` is ``attribute`` itself; a dict of them (docs/aggregation.md's
    ``{"train": ..., "val": ...}``) gives ``attribute['train']``, ``attribute['val']``.

    Raises:
        AttributeError: the LightningModule has no such attribute.
        TypeError: it holds neither a ``MetricsAggregator`` nor a dict of them.
    """
    owner = type(pl_module).__name__
    if not hasattr(pl_module, attribute):
        raise AttributeError(
            f"AggregatorCheckpoint({attribute!r}): `{owner}` has no attribute {attribute!r}. Name the attribute "
            f"that holds the MetricsAggregator (or a dict of them), e.g. `AggregatorCheckpoint('data_metrics')`."
        )
    value = getattr(pl_module, attribute)
    if isinstance(value, MetricsAggregator):
        return {attribute: value}
    if isinstance(value, Mapping) and value and all(isinstance(v, MetricsAggregator) for v in value.values()):
        return {f"{attribute}[{key!r}]": aggregator for key, aggregator in value.items()}
    raise WrongTypeError(
        f"AggregatorCheckpoint({attribute!r}): `{owner}.{attribute}` is {type(value).__name__}, expected a "
        "MetricsAggregator or a non-empty dict of them (`{'train': MetricsAggregator(), 'val': MetricsAggregator()}`)."
    )


def _merge(earlier: Any, per_rank: list[Any]) -> list[Any]:
    """``per_rank`` joined with the entry another ``AggregatorCheckpoint`` wrote in the same checkpoint."""
    if not isinstance(earlier, list) or len(earlier) != len(per_rank):
        return per_rank
    return [None if old is None or new is None else {**old, **new} for old, new in zip(earlier, per_rank, strict=True)]


class AggregatorCheckpoint(pl.Callback):
    """Keep every rank's :class:`~torchmetrics_ext.aggregation.MetricsAggregator` states in Lightning's checkpoints.

    A ``MetricsAggregator`` is no ``torch.nn.Module``, so the ``LightningModule``'s ``state_dict``
    (what Lightning checkpoints) does not hold it, and a fit resumed with ``trainer.fit(ckpt_path=...)``
    starts its totals from 0. This callback adds them: when a checkpoint is saved (Lightning calls
    ``on_save_checkpoint`` on every rank) each rank's ``state_dict()`` of every named aggregator is
    gathered (one ``all_gather_object`` under DDP) into ``checkpoint["metrics_aggregators"]``, a list
    with one dict per rank; on resume each rank loads its own entry, so ``get_metrics_for_logging``
    (which syncs the ranks' states when called) gives the values of the run that was not
    interrupted. Nothing runs per step.

    The aggregators are found by attribute name: an attribute holding a ``MetricsAggregator``, or a
    dict of them (docs/aggregation.md's ``self.data_metrics = {"train": ..., "val": ...}``: every
    entry is kept; a validation aggregator reset at each epoch end is saved empty).

    **Another number of ranks.** A rank the saved run did not have starts its aggregators empty (2 ->
    3: the synced values are the saved run's); the records of a saved rank that no rank of this run
    has are lost (3 -> 2: ``MetricsAggregator`` has no merge), and rank 0 warns naming them.
    **A checkpoint without an aggregator's states** (saved without this callback, or before the
    aggregator was added) follows the ``LightningModule``'s ``strict_loading``, as Lightning's own
    restore does: ``True`` raises a ``RuntimeError`` naming it, ``False`` starts it empty with a
    warning. A checkpoint saved in the main process after a ``strategy="ddp_spawn"`` fit
    (``trainer.save_checkpoint`` there) cannot hold the ranks' aggregators, which lived in the rank
    processes: the save warns, and a resume from it starts them empty, with a warning. Save the
    checkpoints to resume during the fit (``ModelCheckpoint``).

    ``trainer.validate``/``test(ckpt_path=...)`` load the states too (the values they log are those of
    the aggregators they update; reset a validation aggregator at its epoch end, as the page's model does).

    Args:
        attributes: the attribute names of the ``LightningModule`` that hold the aggregators (one name or
            several).

    Raises:
        TypeError: ``attributes`` is not a name or a sequence of names; at ``setup``, a named attribute that
            holds neither a ``MetricsAggregator`` nor a dict of them.
        ValueError: ``attributes`` is empty, or has an empty name.
        AttributeError: at ``setup``, a named attribute that the ``LightningModule`` does not have.

    Examples:
        >>> from torchmetrics_ext.integrations.lightning import AggregatorCheckpoint
        >>> AggregatorCheckpoint("data_metrics").attributes
        ('data_metrics',)
    """

    def __init__(self, attributes: str | Sequence[str] = "data_metrics") -> None:
        super().__init__()
        names = (attributes,) if isinstance(attributes, str) else attributes
        if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
            raise WrongTypeError(
                f"AggregatorCheckpoint: expected `attributes` to be an attribute name or a sequence of them, got "
                f"{attributes!r}."
            )
        if not names or not all(names):
            raise ValueError(f"AggregatorCheckpoint: expected `attributes` to name attributes, got {attributes!r}.")
        self.attributes = tuple(names)

    def _aggregators(self, pl_module: pl.LightningModule) -> dict[str, MetricsAggregator]:
        found: dict[str, MetricsAggregator] = {}
        for attribute in self.attributes:
            found.update(_held(pl_module, attribute))
        return found

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check every named attribute before the first step (and before any checkpoint is restored)."""
        self._aggregators(pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Store each rank's ``state_dict()`` of every aggregator (one ``all_gather_object`` under DDP)."""
        local = {name: aggregator.state_dict() for name, aggregator in self._aggregators(pl_module).items()}
        _, world = _world() or (0, 1)
        ranks = getattr(trainer, "world_size", 1)
        if world == 1 and ranks > 1:  # ddp_spawn's main process after the fit: the ranks' aggregators are gone
            warn_at_user(
                f"AggregatorCheckpoint: saving a checkpoint outside the {ranks} ranks of the fit (in the main process "
                f"after `strategy='ddp_spawn'`): the aggregators {sorted(local)} here hold none of the ranks' "
                "records, so a resume from it starts them empty. Save checkpoints during the fit (ModelCheckpoint).",
                UserWarning,
            )
            per_rank: list[Any] = [None] * ranks
        elif world > 1:
            per_rank = [None] * world
            dist.all_gather_object(per_rank, local)
        else:
            per_rank = [local]
        checkpoint[CHECKPOINT_KEY] = _merge(checkpoint.get(CHECKPOINT_KEY), per_rank)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Give each rank back its own aggregator states (see the class docstring for the other cases)."""
        aggregators = self._aggregators(pl_module)
        per_rank = checkpoint.get(CHECKPOINT_KEY)
        rank, world = _world() or (0, 1)
        strict = getattr(pl_module, "strict_loading", True)
        saved = len(per_rank) if isinstance(per_rank, list) else 0
        if rank == 0 and saved > world:
            warn_at_user(
                f"AggregatorCheckpoint: the checkpoint holds the aggregators of {saved} ranks, this run has {world}: "
                f"the records of saved rank(s) {list(range(world, saved))} are not carried (MetricsAggregator has no "
                "merge); each rank of this run resumes the saved rank of its number.",
                UserWarning,
            )
        if isinstance(per_rank, list) and saved and all(entry is None for entry in per_rank):
            warn_at_user(
                f"AggregatorCheckpoint: the checkpoint was saved outside the ranks of a `ddp_spawn` fit and holds "
                f"none of their aggregators; {sorted(aggregators)} start empty.",
                UserWarning,
            )
            for aggregator in aggregators.values():
                aggregator.reset()
            return
        if saved and rank >= saved:  # a rank the saved run did not have
            for aggregator in aggregators.values():
                aggregator.reset()
            return
        entry = per_rank[rank] if isinstance(per_rank, list) and saved else {}
        lacking = [name for name in aggregators if not isinstance(entry, Mapping) or name not in entry]
        if lacking and strict:
            held = sorted(entry) if isinstance(entry, Mapping) else []
            raise RuntimeError(
                f"AggregatorCheckpoint: the checkpoint holds no states of {lacking} (saved without this callback, or "
                f"before they were added; it holds {held}). To resume without them (they start empty), set "
                "`self.strict_loading = False` in the LightningModule."
            )
        if lacking:
            warn_at_user(
                f"AggregatorCheckpoint: the checkpoint holds no states of {lacking}; they start empty.",
                UserWarning,
            )
        for name, aggregator in aggregators.items():
            if name in lacking:
                aggregator.reset()
            else:
                aggregator.load_state_dict(entry[name])
