"""How :class:`~torchmetrics_ext.module.RecMetricModule` keeps a compute group's members on their leader's states.

The module updates the first metric of each compute group (its leader) alone; every other member
reports the leader's states, filled in at ``compute()``. What was put into a member directly (its
own update, merge or load, a reset of one metric of the group alone) is replaced there and said with
a warning, and a metric of a group given already updated starts empty. Also whether a metric's
states are as built (its per-task copies then hold what fresh ones would).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar

import torch
from torch import Tensor
from torchmetrics import Metric

from torchmetrics_ext.metrics._checkpoints import (
    _FILL_ALONE,
    reset_cleared_states,
    reset_left_states,
    resets_taken,
    states_written,
)
from torchmetrics_ext.utilities.warnings import warn_at_user

# where a compute group member keeps the leader's cached value it was last computed with (see _holds_states_of)
_STATES_OF = "_computed_with_leader"
# a compute group member's changes and its leader's resets when the module last filled it with its leader's states,
# or reset it with the group (see _fill_member)
_FILLED_AT = "_changes_when_filled"


def _fill_member(member: Metric, leader: Metric) -> str | None:
    """Give a compute group's ``member`` its ``leader``'s states; say what of its own that replaced.

    The module updates only the leader; a member's own ``update``, ``merge_state`` or load (made through
    ``module.metrics[name]``) cannot count, since its states are its leader's: it is replaced here
    (``"changed"``). So is a ``reset`` of the member alone while the leader held something (``"reset"``):
    the leader, not reset since, still holds the group's updates from before it. The mirror case, a
    reset of the leader alone while it held something (``"leader reset"``), cleared the states the
    member reports (one mechanism for both: the notes each reset takes, see
    :func:`~torchmetrics_ext.metrics._checkpoints.reset_cleared_states`). A reset of the whole group
    (``module.reset()``, ``module.metrics.reset()``, or each of its metrics in any order) is neither,
    nor a reset before the group held anything: the member reports what the group has seen since.
    ``None``: nothing of its own, and no reset of one without the other since the last fill.
    """
    own: tuple[int, ...] = member.__dict__.get(_FILLED_AT) or (0, 0, resets_taken(member))
    seen = own[3] if len(own) > 3 else resets_taken(leader)  # recorded without the leader's resets: all seen
    updates, written, resets = _changes(member)
    what = None
    if (updates, written) != own[:2]:
        what = "changed"
    elif resets != own[2] and reset_left_states(member):
        what = "reset"
    elif reset_cleared_states(member, seen):
        what = "leader reset"
    member.reset()
    member.__dict__.pop("_source_at_reset", None)  # the module's own reset, not one that asked to clear the group
    member.merge_state(leader.metric_state)
    member.__dict__[_FILLED_AT] = (*_changes(member), resets_taken(leader))
    return what


# a compute group member's (name, leader's name) in its module, for the warnings of a compute of its own
_NAMES = "_member_names"
# true inside a module's compute, which fills its members itself (with the synced states under DDP)
IN_MODULE_COMPUTE: ContextVar[bool] = ContextVar("IN_MODULE_COMPUTE", default=False)


def _fill_alone(member: Metric, leader: Metric) -> None:
    """Fill ``member`` with ``leader``'s states for a ``compute()`` of its own (outside its module's).

    TorchMetrics' compute groups let a member be computed on its own (its states are its leader's,
    by reference); Lightning does so for ``self.log("ctr", module.metrics["ctr"], on_epoch=True)``.
    A module's member holds its leader's states as of the module's last compute: filled here, it
    reports what its group has seen now (nothing to do when it still holds them), and what was put
    into it directly is dropped with the module's warning.
    """
    if IN_MODULE_COMPUTE.get() or _holds_states_of(member, leader):
        return
    what = _fill_member(member, leader)
    names = member.__dict__.get(_NAMES)
    if what is not None and names is not None:
        name, lead = names
        if what == "leader reset":
            _warn_changed_member(lead, lead, what, [name])
        else:
            _warn_changed_member(name, lead, what)


_FILL_ALONE[:] = [_fill_alone]


def _warn_changed_member(name: str, lead: str, what: str, cleared: Sequence[str] = ()) -> None:
    """Say that what was put into compute group member ``name`` directly is dropped (see :func:`_fill_member`).

    TorchMetrics' compute groups drop such a change silently at the collection's next ``update``. ``what``:
    ``"changed"`` (its own update, merge or load), ``"reset"`` (a reset of it alone) or ``"leader reset"``
    (``name`` is the group's leader, reset alone: ``cleared`` are the members whose states it cleared).
    """
    if what == "leader reset":
        names = ", ".join(repr(n) for n in cleared)
        text = (
            f"RecMetricModule: metric {name!r} was reset on its own, and that reset also cleared the states of "
            f"{names}: they read its states (a compute group, see `compute_groups`), were not reset, and lost the "
            "updates from before the reset. Reset the module (`module.reset()`) or every metric of the group "
            "together, or use a metric outside the module for a value of its own."
        )
    elif what == "reset":
        text = (
            f"RecMetricModule: metric {name!r} was reset on its own and that reset is dropped: it shares its states "
            f"with {lead!r} (a compute group, see `compute_groups`), which was not reset, and reports them, the "
            "updates from before the reset included. Reset the module (`module.reset()`) or every metric of the "
            "group together, or use a metric outside the module for a value of its own."
        )
    else:
        text = (
            f"RecMetricModule: metric {name!r} was changed outside the module (its own update, merge_state or "
            f"load_state_dict) and that change is dropped: it shares its states with {lead!r} (a compute group, see "
            "`compute_groups`), whose states it reports. Feed the module's `update(model_out)`, merge into the "
            f"group's first metric (`module.metrics[{lead!r}]`), or use a metric outside the module."
        )
    warn_at_user(text, UserWarning)


def _warn_carried_samples(carried: Sequence[str], groups: Sequence[Sequence[str]]) -> None:
    """Say that the compute group metrics ``carried``, given already updated (merged, loaded), were reset.

    A group's first metric is the one the module updates and its members report its states, so a first
    metric's own samples would be lent to every member, and a member's dropped at its first compute (see
    :func:`_fill_member`): which one depended on the order of ``metrics``. Every such metric starts empty
    instead, whatever its place in the group; a metric outside any group keeps what it holds.
    """
    parts = []
    for name in carried:
        others = ", ".join(repr(n) for g in groups if name in g for n in g if n != name)
        parts.append(f"{name!r} (with {others})")
    warn_at_user(
        f"RecMetricModule: metric(s) {', '.join(parts)} were given already updated (or merged into, or loaded) and "
        "are reset: each shares its states with the other metrics of its compute group (see `compute_groups`), "
        "which would report its earlier samples as theirs, or drop them. Pass fresh instances (registry names, "
        "classes), or keep such a metric outside the module for a value of its own.",
        UserWarning,
    )


def _changes(metric: Metric) -> tuple[int, int, int]:
    """How many updates ``metric`` has taken since its last reset, how many merges and loads ever, and resets."""
    return metric._update_count, states_written(metric), resets_taken(metric)


def _holds_states_of(member: Metric, leader: Metric) -> bool:
    """Whether a compute group's ``member`` still holds its ``leader``'s states and their value.

    After a compute, a member records the leader's cached value (:data:`_STATES_OF`): every change
    of the leader's states (update, reset, merge, load, sync, move) drops or replaces that object,
    and every change of the member's drops the member's own cached value.
    """
    cached = leader.__dict__["_computed"]
    return cached is not None and member.__dict__.get(_STATES_OF) is cached and member.__dict__["_computed"] is not None


def _states_as_built(metric: Metric) -> bool:
    """Whether every state of ``metric`` equals its default (an update of an empty batch, a fresh metric's load).

    Its copies then hold what fresh ones would: nothing counted for no task. Read once, when a module is built.
    """
    # `metric_state` (deferred states written first) names states as checkpoints do, in `_defaults`' order
    for default, value in zip(metric._defaults.values(), metric.metric_state.values(), strict=True):
        if isinstance(default, Tensor):
            if not isinstance(value, Tensor) or value.shape != default.shape:
                return False
            if not torch.equal(value, default.to(value.device)):
                return False
        elif any(not isinstance(chunk, Tensor) or chunk.numel() for chunk in value):
            return False
    return True
