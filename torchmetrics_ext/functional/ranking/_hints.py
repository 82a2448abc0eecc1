"""TorchMetrics' options given to a ranking function are refused naming what replaces them here.

The classes refuse ``top_k``, ``ignore_index``, ``aggregation`` and ``average`` in their constructor
(:mod:`torchmetrics_ext.metrics.ranking._base`); a function has no constructor, and Python's own
"got an unexpected keyword argument 'top_k'" says nothing of ``k``. :func:`torchmetrics_hints` wraps a
function so that this error, and only it, is told with the replacement (and a did-you-mean for a
misspelt option of ours), still as a ``TypeError`` (what Python raises for an unknown keyword).

The normal call path pays one Python call: the keywords are not parsed. Python raises for an unknown
keyword before the function's body runs, so the wrapper looks at the keywords only on that
``TypeError``: a ``TypeError`` raised inside the function with every keyword known is re-raised as it was.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Collection
from typing import ParamSpec, TypeVar

from torchmetrics_ext.utilities.checks import check_flag

P = ParamSpec("P")
R = TypeVar("R")


def _cutoff_fix(name: str, parameters: Collection[str], value: object, *, inputs: str = "preds, target, ..., ") -> str:
    """What replaces TorchMetrics' ``top_k=value`` in ``name`` (a function, or a class with ``inputs=""``)."""
    if "k" in parameters:
        return f"{name} takes the cutoff as `k`: {name}({inputs}k={value!r})"
    if "ks" in parameters:
        return f"{name} takes its cutoffs as `ks`: {name}({inputs}ks=({value!r},))"
    return f"{name} has no cutoff"


def _ignore_index_fix(name: str, parameters: Collection[str], value: object) -> str:
    """What replaces TorchMetrics' ``ignore_index=value``: ``mask`` where ``name`` takes one."""
    if "mask" in parameters:
        rows = "(flat or padded: a `False` entry drops the row)"
        return f"`{name}(..., mask=(target != {value!r}))` drops those rows {rows}"
    return f"leave those samples out: `keep = target != {value!r}`, then {name}(preds[keep], target[keep], ...)"


def _aggregation_fix(name: str, parameters: Collection[str], value: object) -> str:
    """What replaces TorchMetrics' ``aggregation=value``: nothing, the mean over queries (weighted)."""
    weights = f" (per-query weights: `{name}(..., weights=w)`)" if "weights" in parameters else ""
    return f"no counterpart: the value is the (weighted) mean over queries only{weights}"


def _average_fix(name: str, parameters: Collection[str], value: object) -> str:
    """What replaces TorchMetrics' ``average=value`` of ``MulticlassAccuracy(top_k=...)``: the micro average."""
    micro = (
        'TorchMetrics\' `MulticlassAccuracy(top_k=k, average="micro")` and `MulticlassRecall(top_k=k, average="micro")`'
    )
    if value == "micro":
        return f"the value is always over samples (weighted), {micro}: drop `average`"
    return (
        f"no counterpart: the value is over samples (weighted), {micro}, "
        'where their default `average="macro"` averages per-class values'
    )


# TorchMetrics' options (retrieval, and the `top_k` classification metrics), each with what replaces it
_TORCHMETRICS = {
    "top_k": ("TorchMetrics' name for the cutoff", _cutoff_fix),
    "ignore_index": ("TorchMetrics' padding marker", _ignore_index_fix),
    "aggregation": ("TorchMetrics' reduction over queries", _aggregation_fix),
    "average": ("TorchMetrics' class averaging", _average_fix),
}


def option_hint(option: str, name: str, parameters: Collection[str], value: object) -> str:
    """TorchMetrics' ``option=value`` and what replaces it in ``name`` (of ``parameters``), as the classes say it.

    The classes (:mod:`torchmetrics_ext.metrics.ranking._base`) refuse ``ignore_index``, ``aggregation`` and
    ``average`` in their constructor naming this, with ``name="update"`` and ``update``'s parameters: one text
    for a class and its function.

    Examples:
        >>> print(option_hint("aggregation", "update", ["preds", "target", "weights"], "max"))
        `aggregation='max'` (TorchMetrics' reduction over queries): no counterpart: ... `update(..., weights=w)`)
    """
    what, fix = _TORCHMETRICS[option]
    return f"`{option}={value!r}` ({what}): {fix(name, parameters, value)}"


def unexpected_keywords_message(name: str, parameters: Collection[str], kwargs: dict[str, object]) -> str | None:
    """The message for the keywords of ``kwargs`` that function ``name`` (of ``parameters``) does not take.

    ``None`` when it takes every one of them (the ``TypeError`` was another's).

    Examples:
        >>> print(unexpected_keywords_message("ndcg", ["preds", "target", "k"], {"top_k": 5}))
        ndcg() got an unexpected keyword argument 'top_k' (...): ndcg takes the cutoff as `k`: ndcg(..., k=5).
        >>> ours = ["preds", "target", "k", "exponential_gain"]
        >>> print(unexpected_keywords_message("ndcg", ours, {"exponential": True}))
        ndcg() got an unexpected keyword argument 'exponential' (did you mean 'exponential_gain'?).
        >>> unexpected_keywords_message("ndcg", ["preds", "target", "k"], {"k": 5}) is None
        True
    """
    unknown = [option for option in kwargs if option not in parameters]
    if not unknown:
        return None
    taken = [option for option in parameters if option not in ("preds", "target")]
    said = []
    for option in unknown:
        if option in _TORCHMETRICS:
            what, fix = _TORCHMETRICS[option]
            said.append(f"{option!r} ({what}): {fix(name, parameters, kwargs[option])}")
        else:
            close = difflib.get_close_matches(option, taken, n=1)
            said.append(f"{option!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    plural = "an unexpected keyword argument" if len(unknown) == 1 else "unexpected keyword arguments"
    return f"{name}() got {plural} {'; '.join(said)}."


def torchmetrics_hints(function: Callable[P, R]) -> Callable[P, R]:
    """Wrap a public ranking function: an unknown keyword is a ``TypeError`` naming what replaces it.

    ``validate_args``, when given, must be a flag (``WrongTypeError`` otherwise), as for every functional.

    The wrapper keeps the function's name, docstring and signature (``functools.wraps``); the keywords
    are read only when the call raises ``TypeError`` (see the module docstring).

    Examples:
        >>> import torch
        >>> from torchmetrics_ext.functional import recall_at_k
        >>> recall_at_k(torch.rand(2, 3), torch.ones(2, 3), top_k=2)
        Traceback (most recent call last):
        ...
        TypeError: recall_at_k() got an unexpected keyword argument 'top_k' (...): ... as `k`: recall_at_k(..., k=2).
    """
    name = function.__name__
    parameters = tuple(inspect.signature(function).parameters)

    @functools.wraps(function)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        flag = kwargs.get("validate_args", True)
        if flag is not True and flag is not False:  # a flag, as the classes' (`checks_validate_args`)
            kwargs["validate_args"] = check_flag("validate_args", flag)
        try:
            return function(*args, **kwargs)
        except TypeError:
            message = unexpected_keywords_message(name, parameters, kwargs)
            if message is None:  # every keyword is the function's own: the error is the body's
                raise
            raise TypeError(message) from None

    return call
