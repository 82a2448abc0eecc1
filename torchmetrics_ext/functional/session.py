r"""Session-level precision and recall (TorchRec's ``precision_session_level``/``recall_session_level``).

Within each session the predictions are ranked, and those ranked above ``k`` are the predicted
positives: an item's rank is the number of items of its session with a strictly higher score
(ties share the better rank, as in TorchRec, so a tie at the cut-off can add predicted
positives). With ``rank_labels`` the labels are ranked the same way and the top ``k`` labels
are the positives (TorchRec's ``run_ranking_of_labels``). A row of weight 0 is an absent row:
it takes no top-``k`` place (TorchRec ranks it like any other, so there it can push a weighted
row out of the top ``k``).

Ranks come from two stable sorts per batch (by score, then by session id) and a cumulative
maximum over group starts, batched over tasks: no loop over sessions. A session must lie within
one batch (as in TorchRec).

Two averages of the weighted counts:

* ``average="session"`` (default): the mean over sessions of each session's precision (recall);
  sessions where it is undefined (no predicted positive weight; no positive label weight) are
  skipped. Every session counts once, however many items it holds.
* ``average="micro"``: TorchRec's value, :math:`\sum TP / \sum (TP + FP)` over every item, so
  large sessions weigh more. Equal to TorchRec's whenever no zero-weight row is among a session's
  top ``k`` by TorchRec's ranking of all rows (always when every weight is positive).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from torchmetrics_ext.functional.pointwise import _finish
from torchmetrics_ext.functional.ranking._inputs import check_cutoff
from torchmetrics_ext.utilities.checks import (
    TargetDomain,
    check_choice,
    check_flag,
    check_tensor,
    checks_validate_args,
    format_pointwise,
)
from torchmetrics_ext.utilities.docstrings import with_sections
from torchmetrics_ext.utilities.errors import WrongTypeError
from torchmetrics_ext.utilities.warnings import or_no_samples, warn_undefined

__all__ = ["session_precision_at_k", "session_recall_at_k"]

Average = Literal["session", "micro"]
# state order of _session_update
SESSION_STATES = (
    "true_positives",
    "false_positives",
    "false_negatives",
    "session_precision_sum",
    "sessions_with_precision",
    "session_recall_sum",
    "sessions_with_recall",
)


def _check_session_args(k: int, average: str, rank_labels: bool) -> tuple[int, Average]:
    """Check the options; returns ``k`` as a Python int (NumPy and 0-dim tensor integers accepted) and ``average``.

    ``average`` comes back as a Python string (a 0-dim NumPy string accepted).

    ``k`` is checked as every ranking cutoff is (:func:`~torchmetrics_ext.functional.ranking._inputs.check_cutoff`):
    a positive integer below ``2**63``, since it is compared with int64 ranks (a larger Python int
    would wrap); any ``k`` at least a session's length predicts its every item positive.
    """
    cutoff = check_cutoff(k, "required")
    assert cutoff is not None  # "required" never returns None
    text = check_choice("average", average, ("session", "micro"), "'session' or 'micro' (TorchRec's)")
    check_flag("rank_labels", rank_labels)
    return cutoff, text  # type: ignore[return-value]


def _format_sessions(sessions: Tensor, preds: Tensor, validate: bool) -> Tensor:
    """``sessions`` as int64 ``(T, N)`` ids for the formatted ``(T, N)`` ``preds``; checked when ``validate``.

    A ``sessions`` that is not a tensor (``None``, a list) is refused even unvalidated: a named
    ``WrongTypeError`` costs no more than the ``AttributeError`` it replaces.
    """
    if not isinstance(sessions, Tensor):
        raise WrongTypeError(
            f"Expected `sessions` to be a torch.Tensor of integer session ids, got {type(sessions).__name__}."
        )
    shape = preds.shape
    if validate:
        check_tensor("sessions", sessions)
        if sessions.is_floating_point() or sessions.dtype == torch.bool:
            raise WrongTypeError(f"Expected `sessions` to hold integer ids, got dtype {sessions.dtype}.")
        if sessions.shape not in (shape, shape[-1:]):
            raise ValueError(
                f"Expected `sessions` of shape {tuple(shape[-1:])} or {tuple(shape)}, got {tuple(sessions.shape)}."
            )
        if sessions.device != preds.device:
            raise ValueError(
                f"Expected `sessions` on the same device as `preds` ({preds.device}), got {sessions.device}."
            )
    return (sessions if sessions.ndim == 2 else sessions.unsqueeze(0)).to(torch.int64).expand(shape)


def _ranks_within_session(scores: Tensor, sessions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: number of items of the same session scoring strictly higher; plus the sort and compact session ids.

    Returns ``(ranks, order, group)``: ``ranks`` in the input order; ``order`` the permutation
    that groups rows by session with scores descending; ``group`` the compact session index of
    each row in that order (``0..G-1`` per task).
    """
    by_score = torch.sort(scores, dim=-1, descending=True, stable=True).indices
    by_session = torch.sort(sessions.gather(-1, by_score), dim=-1, stable=True).indices
    order = by_score.gather(-1, by_session)
    ids, values = sessions.gather(-1, order), scores.gather(-1, order)
    new_group = torch.ones_like(ids, dtype=torch.bool)
    new_group[:, 1:] = ids[:, 1:] != ids[:, :-1]
    new_tie = new_group.clone()
    new_tie[:, 1:] |= values[:, 1:] != values[:, :-1]
    position = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
    group_start = torch.where(new_group, position, 0).cummax(-1).values
    tie_start = torch.where(new_tie, position, 0).cummax(-1).values
    ranks = torch.empty_like(order).scatter_(-1, order, tie_start - group_start)
    return ranks, order, new_group.cumsum(-1) - 1


def _session_update(
    preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None, k: int, rank_labels: bool
) -> tuple[Tensor, ...]:
    """Per-task sums in the order of :data:`SESSION_STATES`.

    A zero-weight row is an absent row: it is ranked below every row of weight (its score and,
    with ``rank_labels``, its label taken as ``-inf``), so it never takes a top-``k`` place.
    """
    if weights is not None:
        present = weights > 0
        preds = torch.where(present, preds, -math.inf)
        if rank_labels:
            target = torch.where(present, target, -math.inf)
    ranks, order, group = _ranks_within_session(preds, sessions)
    predicted = (ranks < k).to(torch.float64)
    if rank_labels:
        target = (_ranks_within_session(target, sessions)[0] < k).to(torch.float64)
    w = torch.ones_like(target) if weights is None else weights.expand_as(target)
    tp_rows, fp_rows, fn_rows = w * target * predicted, w * (1 - target) * predicted, w * target * (1 - predicted)

    def per_session(rows: Tensor) -> Tensor:
        return torch.zeros_like(rows).scatter_add_(-1, group, rows.gather(-1, order))

    tp, fp, fn = per_session(tp_rows), per_session(fp_rows), per_session(fn_rows)
    has_pred, has_pos = tp + fp > 0, tp + fn > 0
    precision = torch.where(has_pred, tp / torch.where(has_pred, tp + fp, 1.0), 0.0)
    recall = torch.where(has_pos, tp / torch.where(has_pos, tp + fn, 1.0), 0.0)
    return (
        tp_rows.sum(-1),
        fp_rows.sum(-1),
        fn_rows.sum(-1),
        precision.sum(-1),
        has_pred.sum(-1).to(torch.float64),
        recall.sum(-1),
        has_pos.sum(-1).to(torch.float64),
    )


def _session_precision_compute(states: tuple[Tensor, ...], average: Average) -> Tensor:
    tp, fp, _, p_sum, p_count, _, _ = states
    num, den = (tp, tp + fp) if average == "micro" else (p_sum, p_count)
    undefined = den <= 0
    reason = "no session has a predicted positive with weight"
    warn_undefined(
        undefined,
        "SessionPrecisionAtK",
        reason,
        unseen=lambda: tp + fp + states[2] <= 0,
        unseen_reason=or_no_samples(reason),
    )
    return torch.where(undefined, math.nan, num / torch.where(undefined, 1.0, den))


def _session_recall_compute(states: tuple[Tensor, ...], average: Average) -> Tensor:
    tp, _, fn, _, _, r_sum, r_count = states
    num, den = (tp, tp + fn) if average == "micro" else (r_sum, r_count)
    undefined = den <= 0
    reason = "no session has a positive label with weight"
    warn_undefined(
        undefined,
        "SessionRecallAtK",
        reason,
        unseen=lambda: tp + states[1] + fn <= 0,
        unseen_reason=or_no_samples(reason),
    )
    return torch.where(undefined, math.nan, num / torch.where(undefined, 1.0, den))


def _session_states(
    preds: Tensor,
    target: Tensor,
    sessions: Tensor,
    weights: Tensor | None,
    k: int,
    average: str,
    rank_labels: bool,
    validate_args: bool,
) -> tuple[Tensor, ...]:
    k, average = _check_session_args(k, average, rank_labels)
    label_domain: TargetDomain = "real" if rank_labels else "unit"
    p, t, w = format_pointwise(
        preds,
        target,
        weights,
        None,
        preds_domain="real",
        target_domain=label_domain,
        validate=validate_args,
        target_required=True,
    )
    return _session_update(p, t, _format_sessions(sessions, p, validate_args), w, k, rank_labels)  # type: ignore[arg-type]


# The arguments of both session metrics, which take the same ones (see utilities/docstrings.py)
_SESSION_ARGS = """
Args:
    preds: ``(N,)`` or ``(T, N)`` scores (any finite values; only their order counts).
    target: labels in [0, 1] (any finite values with ``rank_labels``), same shape.
    sessions: integer session ids on ``preds``' device, ``(N,)`` (shared by all tasks) or ``(T, N)``.
    weights: optional non-negative sample weights; a zero-weight row takes no top-``k`` place.
    k: the number of top-ranked items of a session predicted positive, below ``2**63``.
    average: ``"session"`` (mean over sessions) or ``"micro"`` (TorchRec's pooled counts).
    rank_labels: the top-``k`` labels of each session are the positives.
    validate_args: check inputs before computing.
"""


@checks_validate_args
@with_sections(_SESSION_ARGS, before="Returns")
def session_precision_at_k(
    preds: Tensor,
    target: Tensor,
    sessions: Tensor,
    weights: Tensor | None = None,
    *,
    k: int,
    average: Average = "session",
    rank_labels: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Precision of the top-``k`` items of each session taken as positive.

    Returns:
        A scalar or ``(T,)``; ``nan`` with an ``UndefinedMetricWarning`` when no session has a
        predicted positive with weight.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import session_precision_at_k
        >>> preds = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.6, 0.5, 0.4, 0.3])
        >>> target = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1])
        >>> sessions = torch.tensor([1, 1, 1, 2, 2, 2, 2, 3])
        >>> session_precision_at_k(preds, target, sessions, k=2)  # sessions: 1/2, 2/2, 1/1
        tensor(0.8333, dtype=torch.float64)
        >>> session_precision_at_k(preds, target, sessions, k=2, average="micro")  # 4 of 5
        tensor(0.8000, dtype=torch.float64)
    """
    states = _session_states(preds, target, sessions, weights, k, average, rank_labels, validate_args)
    return _finish(_session_precision_compute(states, average), preds.ndim == 1)


@checks_validate_args
@with_sections(_SESSION_ARGS, before="Returns")
def session_recall_at_k(
    preds: Tensor,
    target: Tensor,
    sessions: Tensor,
    weights: Tensor | None = None,
    *,
    k: int,
    average: Average = "session",
    rank_labels: bool = False,
    validate_args: bool = True,
) -> Tensor:
    r"""Recall of the top-``k`` items of each session taken as positive.

    Returns:
        A scalar or ``(T,)``; ``nan`` with an ``UndefinedMetricWarning`` when no session has a
        positive label with weight.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import session_recall_at_k
        >>> preds = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.6, 0.5, 0.4, 0.3])
        >>> target = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1])
        >>> sessions = torch.tensor([1, 1, 1, 2, 2, 2, 2, 3])
        >>> session_recall_at_k(preds, target, sessions, k=2)  # sessions: 1/2, 2/2, 1/1
        tensor(0.8333, dtype=torch.float64)
        >>> session_recall_at_k(preds, target, sessions, k=2, average="micro")  # 4 of 5
        tensor(0.8000, dtype=torch.float64)
    """
    states = _session_states(preds, target, sessions, weights, k, average, rank_labels, validate_args)
    return _finish(_session_recall_compute(states, average), preds.ndim == 1)
