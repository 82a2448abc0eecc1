"""Load-time checks of an exact ranking metric's row states (``preds``, ``target``, ``indexes``, ``weights``).

The four list states hold one value per flat row, and ``compute`` lines them up one to one. A
checkpoint (or a merged dict of states) whose chunks are not flat, not of a dtype ``update``
keeps, or whose row counts disagree would load and fail only at ``compute`` (or compute a value
from misaligned rows); :func:`row_state_problems` says why at ``load_state_dict`` instead, so the
metric refuses it and keeps its states. Read once per load: ``update`` is not slowed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor


def _real(dtype: torch.dtype) -> bool:
    return not dtype.is_complex


def _integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _floating(dtype: torch.dtype) -> bool:
    return dtype.is_floating_point


# what each row state's chunks may hold: (test, wording for messages)
_ROW_DTYPES: dict[str, tuple[Callable[[torch.dtype], bool], str]] = {
    "preds": (_floating, "a floating point dtype"),
    "target": (_real, "a real dtype (bool, integer or floating point)"),
    "indexes": (_integer, "an integer dtype"),
    "weights": (_real, "a real dtype"),
}


def row_state_problems(state_dict: Mapping[str, Any], prefix: str, owner: str, origin: str) -> list[str]:
    """Why the row states under ``prefix`` cannot be an exact ranking metric's (none when they can).

    Args:
        state_dict: the checkpoint (or merged states); each row state a tensor or a list of tensors
            (states that are neither are reported by the base class's checks first).
        prefix: the metric's key prefix in ``state_dict`` (``"ranking.ndcg@3.0.lifetime."``).
        owner: the metric's class and settings, for messages.
        origin: where the states come from, for messages (``"checkpoint"``, ``"merged metric"``).

    Returns:
        Messages naming the state key, what was expected and what arrived: a chunk that is not
        1-D or not of a dtype ``update`` keeps, or row counts that do not line up (``preds``,
        ``target`` and ``indexes`` hold the same rows; ``weights`` as many, or none in a state
        saved before unweighted rows kept unit weights).
    """
    rows: dict[str, int] = {}
    for name, (accepted, wording) in _ROW_DTYPES.items():
        value = state_dict.get(prefix + name)
        chunks = [value] if isinstance(value, Tensor) else value
        if not isinstance(chunks, list) or not all(isinstance(chunk, Tensor) for chunk in chunks):
            continue
        for chunk in chunks:
            if chunk.ndim != 1:
                return [
                    f"state mismatch for {prefix}{name}: the {origin} holds a chunk of shape {tuple(chunk.shape)}, "
                    f"this {owner} keeps flat rows (1-D chunks)."
                ]
            if not accepted(chunk.dtype):
                return [
                    f"state mismatch for {prefix}{name}: the {origin} holds a chunk of dtype {chunk.dtype}, "
                    f"this {owner} keeps `{name}` in {wording}."
                ]
        rows[name] = sum(chunk.shape[0] for chunk in chunks)
    if rows.get("weights") == 0:  # saved before unit weights were kept: every row weighs 1
        del rows["weights"]
    if len(set(rows.values())) <= 1:
        return []
    common, _ = Counter(rows.values()).most_common(1)[0]
    odd = [name for name, count in rows.items() if count != common]
    others = ", ".join(f"{name}={count}" for name, count in rows.items())
    return [
        f"state mismatch for {prefix}{name}: the {origin} holds {rows[name]} rows, expected {common} as in its "
        f"other row states ({others}): this {owner} keeps one value per row in `preds`, `target`, `indexes` "
        "and `weights` (`weights` may be empty: every row weighs 1)."
        for name in odd
    ]
