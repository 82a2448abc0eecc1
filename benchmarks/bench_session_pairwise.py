"""SessionPairwiseAUC's update against TorchRec's padded formula (numpy) and against our previous pair-expanding kernel.

Run: ``python benchmarks/bench_session_pairwise.py`` (200k rows, sessions of 50 rows, graded labels 0-4,
scores with ties, weights with zeros; one thread; a few seconds per round). Contenders, on the same
pre-generated data in the same process, interleaved over ``--rounds`` rounds (best and median reported;
this thread's CPU time, which a shared machine's load disturbs less than the wall clock, unless ``--wall``):

* ``ours``: ``tmx.functional.session_pairwise_auc(..., validate_args=False)`` on the CPU path: rows ordered
  in NumPy, then every pair compared in blocks where the batch has at most 8 pairs per row and per bit of its
  longest session, else per-row counts over each row's partner range (a wavelet matrix, O(N log N));
* ``ours, previous kernel``: the kernel this replaced (commit 991f7289), kept below as written there: rows
  sorted by (session, label), then every valid pair compared, in chunks of 2**18 pairs (O(P) for P pairs;
  three host reads per update: two ``torch.unique`` sizes and the pair count);
* ``torchrec-numpy``: TorchRec's ``_get_session_pairwise_auc_states`` re-written in numpy: rows sorted by
  session, packed into a ``(sessions, longest session)`` grid, every cell pair of a session compared with
  the ``|dy| >= 1e-6``, non-zero-weight and upper-triangle masks (O(S * L^2) for S sessions of length L).

All three values are checked to agree before any timing. ``--sessions-of`` changes the session length
(the two pair-forming contenders grow as its square, ours does not).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchmetrics_ext.functional import session_pairwise as SP
from torchmetrics_ext.functional import session_pairwise_auc


def make_data(n: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sessions = rng.permutation(np.repeat(np.arange(n // length + 1) * 7, length)[:n])  # rows of a session scattered
    y = rng.integers(0, 5, n).astype(np.float32)
    p = np.round(rng.random(n) * 0.3 + 0.15 * y, 3).astype(np.float32)  # ties inside sessions
    w = rng.choice([0.0, 0.5, 1.0, 2.0], n, p=[0.1, 0.3, 0.4, 0.2])
    return {"preds": p, "target": y, "sessions": sessions.astype(np.int64), "weights": w}


# ----------------------------------------------------------------------------- the previous kernel (991f7289)

PAIR_CHUNK = 1 << 18


def _old_sorted_rows(target: Tensor, sessions: Tensor, present: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    num_tasks, n = target.shape
    flat = num_tasks * n
    ids, session_ids = torch.unique(sessions, return_inverse=True)
    task = torch.arange(num_tasks, device=target.device).unsqueeze(-1)
    num_ids = max(ids.numel(), 1)
    group = task * num_ids + session_ids
    alone = num_tasks * num_ids + torch.arange(flat, device=target.device).view(num_tasks, n)
    group = torch.where(present, group, alone).flatten()
    labels, label_rank = torch.unique(target, return_inverse=True)
    num_labels = labels.numel()
    below = torch.searchsorted(labels, target - SP.LABEL_GAP, right=True) - 1
    below = torch.minimum(below, label_rank - 1).flatten()
    keys = group * num_labels + label_rank.flatten()
    sorted_keys, order = torch.sort(keys)
    base = group[order] * num_labels
    start = torch.searchsorted(sorted_keys, base)
    lower = torch.searchsorted(sorted_keys, base + below[order], right=True) - start
    last = torch.searchsorted(sorted_keys, base + num_labels) - 1
    return order, start, lower, last


def old_pairwise_update(preds: Tensor, target: Tensor, sessions: Tensor, weights: Tensor | None) -> Tensor:
    """The previous kernel's correct / total pair weight (default options) of one ``(1, N)`` batch."""
    num_tasks, n = preds.shape
    y = target.to(torch.float64)
    w = torch.ones_like(y) if weights is None else weights.to(torch.float64).expand_as(y)
    order, start, lower, _ = _old_sorted_rows(y, sessions, w > 0)
    p_sorted, w_sorted = preds.flatten()[order], w.flatten()[order]
    task_sorted = torch.div(order, max(n, 1), rounding_mode="floor")
    zeros = torch.zeros(num_tasks, dtype=torch.float64)
    ends = lower.cumsum(0)
    num_pairs = int(ends[-1]) if ends.numel() else 0
    first_partner = start - ends + lower
    correct, total = zeros.clone(), zeros.clone()
    for first in range(0, num_pairs, PAIR_CHUNK):
        pair = torch.arange(first, min(first + PAIR_CHUNK, num_pairs))
        hi = torch.searchsorted(ends, pair, right=True)
        lo = first_partner[hi] + pair
        p_hi, p_lo = p_sorted[hi], p_sorted[lo]
        credit = (p_hi > p_lo).to(torch.float64) + 0.5 * (p_hi == p_lo).to(torch.float64)
        pair_weight = w_sorted[hi] + w_sorted[lo]
        task = task_sorted[hi]
        correct.index_add_(0, task, credit * pair_weight)
        total.index_add_(0, task, pair_weight)
    return correct / total


# ----------------------------------------------------------------------------- TorchRec's formula in numpy


def torchrec_numpy(p: np.ndarray, y: np.ndarray, sessions: np.ndarray, w: np.ndarray) -> float:
    """TorchRec's padded-session computation (one task, default options), written with numpy."""
    order = np.argsort(sessions, kind="stable")
    s, p, y, w = sessions[order], p[order].astype(np.float32), y[order].astype(np.float32), w[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    lengths = np.diff(np.r_[starts, len(s)])
    index = np.repeat(np.arange(len(starts)), lengths)
    position = np.arange(len(s)) - np.repeat(starts, lengths)
    grid = (len(starts), int(lengths.max()))
    pg, yg, wg = np.zeros(grid, np.float32), np.zeros(grid, np.float32), np.zeros(grid, np.float64)
    filled = np.zeros(grid, bool)
    pg[index, position], yg[index, position], wg[index, position], filled[index, position] = p, y, w, True
    dy = yg[:, :, None] - yg[:, None, :]
    dp = pg[:, :, None] - pg[:, None, :]
    valid = filled[:, :, None] & filled[:, None, :] & np.triu(np.ones(grid[1:] * 2, bool), 1)
    valid &= (np.abs(dy) >= 1e-6) & (wg[:, :, None] * wg[:, None, :] > 0)
    pair_weight = np.where(valid, wg[:, :, None] + wg[:, None, :], 0.0)
    concordance = (dp * dy > 0) + 0.5 * (dp == 0)
    return float((concordance * pair_weight).sum() / pair_weight.sum())


# ----------------------------------------------------------------------------- timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="rows per update (default 200,000)")
    parser.add_argument("--sessions-of", type=int, default=50, help="rows per session (default 50)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wall", action="store_true", help="wall-clock time (default: this thread's CPU time)")
    args = parser.parse_args()
    clock = time.perf_counter if args.wall else time.thread_time
    torch.set_num_threads(1)
    data = make_data(args.n, args.sessions_of)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    two_d = {k: v.unsqueeze(0) for k, v in t.items()}

    contenders: dict[str, Callable[[], float]] = {
        "ours": lambda: float(session_pairwise_auc(**t, validate_args=False)),
        "ours, previous kernel": lambda: float(
            old_pairwise_update(two_d["preds"], two_d["target"], two_d["sessions"], two_d["weights"])
        ),
        "torchrec-numpy": lambda: torchrec_numpy(data["preds"], data["target"], data["sessions"], data["weights"]),
    }
    values = {name: run() for name, run in contenders.items()}
    reference = values["torchrec-numpy"]
    for name, value in values.items():
        assert abs(value - reference) < 1e-9, (name, value, reference)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in names:
            start = clock()
            contenders[name]()
            times[name].append(clock() - start)
    ours = min(times["ours"])
    print(
        f"torch {torch.__version__}, 1 thread; N={args.n:,} rows, sessions of {args.sessions_of}, "
        f"{args.rounds} rounds, {'wall' if args.wall else 'thread CPU'} time; value {reference:.9f} (all agree to 1e-9)"
    )
    print(f"| {'contender':24s} | best ms | median ms | best vs ours |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name:24s} | {1e3 * min(ts):.2f} | {1e3 * statistics.median(ts):.2f} | {min(ts) / ours:.2f}x |")


if __name__ == "__main__":
    main()
