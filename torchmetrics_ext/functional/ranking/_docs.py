"""One source for the ranking API's argument documentation: a small docstring template.

Every ranking function and class shares most of its arguments (the inputs, the empty-query
policy, padding, ...). Their descriptions live once in :data:`ARGUMENTS`; :func:`ranking_doc`
writes the ``Args:`` (and, for functions, ``Returns:``/``Raises:``) sections of a docstring
from the object's own signature, so the documentation lists exactly the parameters the object
takes, in its order. The literal docstring holds the summary, the formula, notes and the
runnable ``Examples:``; the sections are inserted before its first ``Note:`` or ``Examples:``.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import TypeVar

from torchmetrics_ext.functional.ranking._spec import RankingSpec

T = TypeVar("T", bound=Callable[..., object])

ARGUMENTS = {
    "preds": "scores, ``(N,)`` with ``indexes`` or padded ``(Q, L)``; any real value, ``±inf`` included "
    "(NaN is rejected).",
    "target": "relevance of the shape of ``preds``: bool, integer or float, finite and ``>= 0``; "
    "``target > 0`` is relevant (NDCG uses the grades).",
    "indexes": "``(N,)`` integer query ids (flat input only; rows with the same id are one query).",
    "mask": "optional bool tensor of the shape of ``preds``; ``False`` drops a row / marks a padded slot.",
    "weights": "optional non-negative query weights: ``(N,)`` rows (a query takes its largest) or ``(Q,)``.",
    "ks": "cutoffs: positive integers, or ``None`` for the whole list (key without ``@``); each at most once.",
    "exponential_gain": "NDCG gain :math:`2^y - 1` (Burges) instead of :math:`y` (Järvelin and Kekäläinen); "
    "in float64, a query's gains scaled by :math:`2^{512 - M}` when its largest relevance :math:`M` exceeds "
    "512 (its NDCG unchanged: no overflow for any finite relevance), and grades below 1 given "
    r":math:`\operatorname{expm1}(y \ln 2)`, exact where :math:`2^y - 1` cancels (to 0 below :math:`2^{-53}`).",
    "adaptive_k": "divide precision by ``min(k, n_q)`` instead of ``k`` (TorchMetrics' ``adaptive_k``).",
    "report_as_loss": "return ``1 - value`` (TorchRec's ``report_ndcg_as_decreasing_curve``).",
    "empty_target_action": '``"skip"`` (default: left out), ``"zero"``, ``"one"`` or ``"error"`` for queries '
    "without a relevant candidate.",
    "padding_value": "padded predictions equal to it are padding (padded ``(Q, L)`` input only: flat rows "
    "with it set raise ``ValueError``).",
    "remove_single_length_sessions": "leave out queries with a single candidate (TorchRec option).",
    "queries_complete_per_batch": "score each batch's queries at ``update`` and keep only sums (constant "
    "memory; a query split across batches counts as separate queries) instead of exact ``cat`` states.",
    "validate_args": "check the inputs first; a rejected batch raises and changes nothing.",
    "kwargs": "TorchMetrics options (``sync_on_compute``, ``process_group``, ``dist_sync_fn``, ...).",
}

_CUTOFF = {
    "required": "cutoff, a positive integer.",
    "optional": "cutoff, a positive integer, or ``None`` for the whole list.",
}

RETURNS = (
    "A float64 scalar: the weighted mean over the counted queries; ``nan`` with ``UndefinedMetricWarning`` "
    "when no query counts."
)

RAISES = (
    "ValueError: bad arguments or inputs (shapes, NaN scores, negative relevance or weights), or a query "
    'without a relevant candidate with ``empty_target_action="error"``.',
    "TypeError: non-tensor or wrongly typed inputs.",
)

EDGE_CASES = (
    "Ties: candidates of one query with equal scores rank by relevance ascending (the relevant ones "
    "of a tie last: pessimistic), so a constant predictor is never rewarded and the value does not "
    "depend on the order of the rows, the batch split or the number of ranks. A cutoff ``k`` longer "
    "than a query's list takes the whole list. Queries without a relevant candidate follow "
    "``empty_target_action``; when no query counts, the value is ``nan`` with ``UndefinedMetricWarning``."
)

_SECTION = re.compile(r"^    (Note|Examples):$", re.MULTILINE)


def _entries(
    obj: Callable[..., object], spec: RankingSpec | None, extra: dict[str, str], shared: Sequence[str]
) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    names = []
    forwards = False
    for param in inspect.signature(target).parameters.values():
        if param.name == "self" or param.kind == param.VAR_POSITIONAL:
            continue
        if param.kind == param.VAR_KEYWORD:
            forwards = True
            continue
        names.append(param.name)
    if forwards:  # options forwarded to the base class, then TorchMetrics' own
        names += [name for name in shared if name not in names] + ["kwargs"]
    texts = {**ARGUMENTS, **({"k": _CUTOFF[spec.cutoff]} if spec is not None and spec.cutoff in _CUTOFF else {})}
    texts.update(extra)
    return [f"{name}: {texts[name]}" for name in names]


def ranking_doc(
    spec: RankingSpec | None = None,
    *,
    extra: dict[str, str] | None = None,
    shared: Sequence[str] = (),
    returns: str | None = RETURNS,
    note: str = EDGE_CASES,
) -> Callable[[T], T]:
    """Complete the docstring of a ranking function or class with its ``Args``/``Returns``/``Raises``.

    Args:
        spec: the metric's spec (documents ``k`` after its cutoff rule); by default a class's
            ``spec`` attribute, if any.
        extra: descriptions of parameters :data:`ARGUMENTS` does not hold (or overrides).
        shared: for a class whose ``__init__`` forwards ``**kwargs`` to the ranking base class,
            the base's options, listed after the class's own parameters.
        returns: the ``Returns:`` text; ``None`` for classes.
        note: the edge cases every ranking docstring states (ties, long cutoffs, undefined values):
            the first paragraph of its ``Note:`` section (one is made where the docstring has none).

    Returns:
        A decorator that sets ``__doc__`` and returns the object unchanged.
    """

    def decorate(obj: T) -> T:
        doc = inspect.cleandoc(obj.__doc__ or "")
        indent = "\n        "
        lines = _entries(obj, spec if spec is not None else getattr(obj, "spec", None), extra or {}, shared)
        sections = "    Args:" + indent + indent.join(lines)
        if returns is not None:
            sections += "\n\n    Returns:" + indent + returns
        sections += "\n\n    Raises:" + indent + indent.join(RAISES)
        summary, _, body = doc.partition("\n")
        body = "\n".join("    " + line if line else line for line in body.split("\n"))  # the indentation doctest saw
        match = _SECTION.search(body)
        cut = match.start() if match else len(body)
        head, tail = body[:cut].rstrip(), body[cut:].lstrip("\n")
        edge_cases = textwrap.fill(note, width=100, initial_indent=" " * 8, subsequent_indent=" " * 8)
        if tail.startswith("    Note:\n"):
            tail = f"    Note:\n{edge_cases}\n\n{tail[len('    Note:') + 1 :]}"
        else:
            tail = f"    Note:\n{edge_cases}\n\n{tail}"
        obj.__doc__ = f"{summary}\n{head}\n\n{sections}\n\n{tail}".rstrip() + "\n"
        return obj

    return decorate
