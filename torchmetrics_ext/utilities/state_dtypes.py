"""Which dtypes a checkpoint may hold for a metric's state: one rule for every load.

A state loaded in a dtype it does not hold changes what the metric computes, far from the load:
a bool or integer tensor in a float64 sum makes the next in-place update fail ("result type
Double can't be cast to the desired output type Bool"), and a float32 one would keep on summing
in float32 (counts reach 1e9+ samples). The rule, checked before anything of the metric loads:

* an **integer or bool** state (counts, ids, flags) takes exactly its own dtype: ``set_dtype``
  never casts one, so every checkpoint of the metric holds it so;
* a **floating** state (sums, histograms) takes a floating tensor whose every value its own
  dtype holds exactly: its dtype or a narrower one (``float16``, ``bfloat16`` or ``float32`` into
  ``float64``), loaded cast to the state's dtype. So a metric saved after ``set_dtype(float32)``
  resumes a float64 metric, in float64. A wider dtype (float64 into a metric cast by
  ``set_dtype(torch.float16)``) would round the sums: it is refused; ``set_dtype`` the metric
  to the checkpoint's dtype first;
* a **list** state's chunks (exact modes' samples) keep the dtype they were saved in and are
  cast to the state's declared dtype at sync: a floating state (scores, weights) takes floating
  chunks of any width (``set_dtype`` casts them), an integer state (ids) integer chunks of any
  width (``int32`` ids), not bool ones (no update keeps ids as flags, and a bool tensor state is
  refused by an integer one the same). A metric whose updates keep other dtypes checks its chunks
  itself (an exact ranking metric keeps ``int8`` or bool labels: ``metrics/ranking/_rows.py``).
  A binned window's per-update values and bin indices (``wrappers/_histogram.py``) are such chunks.

A refused state is an error naming its key, the dtype this metric keeps it in and the
checkpoint's (or the merged metric's), that goes to ``load_state_dict``'s ``error_msgs``: the load
raises and nothing of the metric loads. ``merge_state`` applies the same rule to the states it
merges (a tensor state taken is cast to the state's dtype) and raises the same message.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["dtype_problem"]


def _takes(expected: torch.dtype, given: torch.dtype, chunk: bool) -> bool:
    """Whether a tensor (``chunk``: a list state's chunk) of ``given`` dtype loads into a state of ``expected``."""
    if given.is_complex:
        return expected == given
    if chunk:  # any width of the state's kind: floating, integer (not bool) or bool
        if expected.is_floating_point or given.is_floating_point:
            return given.is_floating_point == expected.is_floating_point
        return (given == torch.bool) == (expected == torch.bool)
    if expected.is_floating_point:
        return given.is_floating_point and torch.promote_types(given, expected) == expected
    return given == expected


def dtype_problem(
    key: str, value: Any, expected: torch.dtype | None, owner: str, chunks: bool = False, origin: str = "checkpoint"
) -> str | None:
    """The error for ``value`` loaded into the state at ``key`` kept in ``expected`` (see the module's rule).

    Args:
        key: the state's key in the checkpoint, for the message.
        value: the checkpoint's tensor, or a list of chunks (``chunks=True``); anything else is not
            looked at (the caller reports a value of the wrong type).
        expected: the dtype the metric keeps the state in (a list state's: the dtype it syncs as);
            ``None``: not checked.
        owner: the metric, for the message (``"NormalizedEntropy"``).
        chunks: ``value`` holds a list state's chunks.
        origin: where ``value`` comes from, for the message (``"merged metric"`` for ``merge_state``).

    Returns:
        The message, or ``None`` if ``value`` loads.

    Examples:
        >>> problem = dtype_problem("ne.pos_labels", torch.zeros(2, dtype=torch.bool), torch.float64, "NE")
        >>> problem.split(" (")[0]
        'dtype mismatch for ne.pos_labels: the checkpoint holds torch.bool, this NE keeps it as torch.float64'
        >>> dtype_problem("ne.pos_labels", torch.zeros(2, dtype=torch.float32), torch.float64, "NE")
    """
    if expected is None:
        return None
    tensors = value if chunks and isinstance(value, list) else [value]
    for tensor in tensors:
        if isinstance(tensor, Tensor) and not _takes(expected, tensor.dtype, chunks):
            if chunks:
                why = "the chunks of a list state are floating if it is, bool if it is, else integer (not bool)"
            elif expected.is_floating_point:
                why = "a floating state takes a floating dtype it holds exactly"
            else:
                why = "an integer or bool state takes its own dtype only"
            return (
                f"dtype mismatch for {key}: the {origin} holds {tensor.dtype}, this {owner} keeps it as "
                f"{expected} ({why})."
            )
    return None
