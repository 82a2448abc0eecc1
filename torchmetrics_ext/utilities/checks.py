"""Input checks: the argument helpers every family shares, and pointwise (binary / regression) inputs.

Every pointwise metric and functional goes through :func:`format_pointwise`: it checks the
inputs (when ``validate`` is true), raising ``TypeError``/``ValueError`` that name the argument,
what arrived and what was expected, and returns them as float64 ``(T, N)`` tensors. It never
touches metric state, so a rejected batch is never half-applied.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

PredsDomain = Literal["probability", "real"]
TargetDomain = Literal["unit", "binary", "nonnegative", "real"]

_TARGET_TEXT = {
    "unit": "labels in [0, 1] (soft labels allowed)",
    "binary": "binary labels in {0, 1}",
    "nonnegative": "finite values >= 0",
    "real": "finite real values",
}


def check_flag(name: str, value: object) -> None:
    """Raise ``ValueError`` unless the option ``name`` is a bool (``True``/``False``, not ``1``/``0``)."""
    if not isinstance(value, bool):
        raise ValueError(f"Expected `{name}` to be a bool, got {value!r}.")


def check_tensor(name: str, value: object, *, floating: bool = False) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a real tensor (floating point when ``floating``); return it."""
    if not isinstance(value, Tensor):
        raise TypeError(f"Expected `{name}` to be a torch.Tensor, got {type(value).__name__}.")
    if floating and not value.is_floating_point():
        raise TypeError(f"Expected `{name}` to be a floating point tensor, got dtype {value.dtype}.")
    if value.is_complex():
        raise TypeError(f"Expected `{name}` to be a real tensor, got dtype {value.dtype}.")
    return value


def _task_shape_error(name: str, shape: torch.Size, num_tasks: int | None) -> ValueError:
    expected = "(N,) or (T, N)" if num_tasks is None else ("(N,)" if num_tasks == 1 else "(T, N)")
    if num_tasks is not None:
        expected += f" with num_tasks={num_tasks}"
        if num_tasks == 1:
            expected += " (or (1, N))"
    return ValueError(f"Expected `{name}` of shape {expected}, got shape {tuple(shape)}.")


def format_pointwise(
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | None,
    num_tasks: int | None,
    *,
    preds_domain: PredsDomain = "probability",
    target_domain: TargetDomain = "unit",
    from_logits: bool = False,
    validate: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Check pointwise inputs and return them as float64 tensors with a leading task dimension.

    Args:
        preds: ``(N,)`` or ``(T, N)`` floating point predictions.
        target: labels of the same shape as ``preds``, or ``None`` where the metric needs none.
        weights: non-negative sample weights, ``None`` (all ones), the shape of ``preds``, or
            ``(N,)`` shared by every task.
        num_tasks: the number of tasks the metric was built for; ``None`` infers it from ``preds``.
        preds_domain: ``"probability"`` (values in [0, 1], or any finite logit when
            ``from_logits``) or ``"real"`` (any finite value).
        target_domain: ``"unit"`` ([0, 1]), ``"binary"`` ({0, 1}), ``"nonnegative"`` or ``"real"`` (finite).
        from_logits: whether probability-domain ``preds`` are logits.
        validate: run the checks; when false, only reshape and cast.

    Returns:
        ``(preds, target, weights)`` as float64; ``preds`` and ``target`` of shape ``(T, N)``,
        ``weights`` of shape ``(T, N)`` or ``(1, N)`` (or ``None``).

    Raises:
        TypeError: if an input is not a tensor, or ``preds`` is not floating point.
        ValueError: on a shape, device, task-dimension or value-range mismatch.
    """
    if not validate and num_tasks is not None and _is_formatted(preds, target, weights, num_tasks):
        return preds, target, weights  # already the output form (a caller that feeds many metrics)
    if validate:
        check_tensor("preds", preds, floating=True)
        if target is not None:
            check_tensor("target", target)
        if weights is not None:
            check_tensor("weights", weights)
        if preds.ndim not in (1, 2) or (preds.ndim == 2 and num_tasks is not None and preds.shape[0] != num_tasks):
            raise _task_shape_error("preds", preds.shape, num_tasks)
        if preds.ndim == 1 and num_tasks not in (None, 1):
            raise _task_shape_error("preds", preds.shape, num_tasks)
        for name, other in (("target", target), ("weights", weights)):
            if other is not None and other.device != preds.device:
                raise ValueError(
                    f"Expected `{name}` on the same device as `preds` ({preds.device}), got {other.device}."
                )
        if target is not None and target.shape != preds.shape:
            raise ValueError(
                f"Expected `target` of the same shape as `preds` {tuple(preds.shape)}, got {tuple(target.shape)}."
            )
        if weights is not None and weights.shape != preds.shape and weights.shape != preds.shape[-1:]:
            raise ValueError(
                f"Expected `weights` of shape {tuple(preds.shape)} or {tuple(preds.shape[-1:])} (shared by all "
                f"tasks), got {tuple(weights.shape)}."
            )

    target_is_float = target is not None and target.is_floating_point()
    preds = preds.to(torch.float64)
    if preds.ndim == 1:
        preds = preds.unsqueeze(0)
    if target is not None:
        target = target.to(torch.float64).reshape(preds.shape)
    if weights is not None:
        weights = weights.to(torch.float64)
        weights = weights.reshape(preds.shape if weights.numel() == preds.numel() else (1, preds.shape[-1]))

    if validate and preds.numel() > 0:
        _check_values(preds, target, weights, preds_domain, target_domain, from_logits, target_is_float)
    return preds, target, weights


def _is_formatted(preds: Tensor, target: Tensor | None, weights: Tensor | None, num_tasks: int) -> bool:
    """Whether ``format_pointwise`` would return these tensors unchanged: float64 ``(T, N)``, weights ``(T|1, N)``."""
    shape = preds.shape
    return (
        preds.dtype == torch.float64
        and preds.ndim == 2
        and shape[0] == num_tasks
        and (target is None or (target.dtype == torch.float64 and target.shape == shape))
        and (weights is None or (weights.dtype == torch.float64 and weights.shape in ((1, shape[1]), shape)))
    )


def _check_values(
    preds: Tensor,
    target: Tensor | None,
    weights: Tensor | None,
    preds_domain: PredsDomain,
    target_domain: TargetDomain,
    from_logits: bool,
    target_is_float: bool,
) -> None:
    """Range checks with a single host synchronisation for all inputs."""
    stats = [*torch.aminmax(preds)]
    if target is not None:
        stats += [*torch.aminmax(target)]
        if target_domain == "binary" and target_is_float:
            # in [0, 1] (checked below) a label is 0 or 1 exactly when it has no fractional part
            stats.append(target.frac().any().to(torch.float64))
    if weights is not None:
        stats += [*torch.aminmax(weights)]
    values = torch.stack(stats).tolist()

    pmin, pmax = values[0], values[1]
    if not (math.isfinite(pmin) and math.isfinite(pmax)):
        raise ValueError(f"Expected `preds` to be finite, got values containing NaN or inf (min={pmin}, max={pmax}).")
    if preds_domain == "probability" and not from_logits and (pmin < 0 or pmax > 1):
        raise ValueError(
            f"Expected `preds` to be probabilities in [0, 1], got values in [{pmin:.6g}, {pmax:.6g}]. "
            "Pass `from_logits=True` if they are logits."
        )
    rest = values[2:]
    if target is not None:
        tmin, tmax = rest[0], rest[1]
        ok_range = math.isfinite(tmin) and math.isfinite(tmax)
        if target_domain != "real":
            ok_range = ok_range and tmin >= 0 and (target_domain == "nonnegative" or tmax <= 1)
        not_binary = target_domain == "binary" and target_is_float and rest[2] > 0
        if not ok_range or not_binary:
            raise ValueError(
                f"Expected `target` to hold {_TARGET_TEXT[target_domain]}, got values in [{tmin:.6g}, {tmax:.6g}]"
                + (" that are not all 0 or 1." if not_binary and ok_range else ".")
            )
        rest = rest[3:] if target_domain == "binary" and target_is_float else rest[2:]
    if weights is not None:
        wmin, wmax = rest[0], rest[1]
        if not (wmin >= 0 and math.isfinite(wmax)):
            raise ValueError(
                f"Expected `weights` to be finite and non-negative, got values in [{wmin:.6g}, {wmax:.6g}]."
            )
