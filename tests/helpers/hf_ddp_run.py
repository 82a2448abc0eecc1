"""``transformers.Trainer.evaluate()`` with the package's ``compute_metrics`` on 2 gloo ranks (CPU).

Started by ``tests/test_huggingface_ddp.py`` under ``python -m torch.distributed.run --nproc-per-node 2``.
Every rank runs the same cases (the ranking adapter with index or relevance labels, over an
``IterableDataset`` too, the pointwise adapter, with weight, group, segment and session columns too; the Trainer's whole-array mode, its batches kept apart with ``eval_do_concat_batches=False``,
and ``batch_eval_metrics=True``), each over an eval set whose size is no multiple of
``world_size x per_device_eval_batch_size``: the last step's batches are completed with duplicated
samples (accelerate's ``even_batches``), which ``gather_for_metrics`` drops. Each rank writes
``rank{r}.json`` (the ``evaluate()`` values per case, the process group's size and backend),
``rank{r}-{case}.npz`` (the gathered ``predict()`` output, for the test's references), and
``no-group{r}`` (a traceback) where its process group cannot start.
"""

from __future__ import annotations

import argparse
import json
import os
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import transformers
from torch import nn

from tests.test_huggingface import TOP_K, Candidates, ConversionOfClicks, MaskedClicker, Scorer
from tests.test_huggingface_columns import COLUMNS, ColumnClicker, ColumnClicks, column_metrics
from tests.test_huggingface_label_names import WeightedClicker, WeightedClicks
from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics, ranking_compute_metrics

BATCH = 4  # per device: 2 ranks x 4 = 8 rows a step
QUERIES = 19  # 5 batches of 4 (the last of 3): rank 1's third batch is all duplicates, 19 % 8 = 3 rows kept
CLICKS = 43  # 11 batches (the last of 3): 43 % 8 = 3
POINTWISE = ("ne", "log_loss", "auc", "ctr", "sum_weights")
WEIGHTED = ("ne", "log_loss", "auc", "gauc", "sum_weights")
WEIGHTED_LABELS = ("labels", "weight", "user_id")
TRAINER_KEYS = {  # evaluate()'s own values, next to the adapter's
    "epoch",
    "eval_loss",
    "eval_model_preparation_time",
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
}
MODES = {  # name -> (batch_eval_metrics, eval_do_concat_batches)
    "whole": (False, True),
    "apart": (False, False),
    "batch": (True, True),
}


class RelevanceCandidates(Candidates):
    """The candidate lists with labels as a relevance row: 1 for the relevant candidate, 0, -100 in padded slots."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = super().__getitem__(i)
        relevance = torch.where(row["mask"], 0, -100)
        relevance[int(self.labels[i])] = 1
        return {**row, "labels": relevance}


class RelevanceScorer(Scorer):
    """:class:`Scorer` trained on relevance rows (a binary cross-entropy over the real candidates)."""

    def forward(self, features, mask, labels=None):
        scores = torch.sigmoid(self.linear(features).squeeze(-1))
        scores = torch.where(mask, scores, torch.full_like(scores, -10.0))
        kept = labels >= 0
        return {"loss": nn.functional.binary_cross_entropy(scores[kept], labels[kept].float()), "logits": scores}


class StreamedCandidates(torch.utils.data.IterableDataset):
    """The candidate lists streamed, without ``len``: accelerate's rank 0 reads each step's batches and
    sends every rank its share (``dispatch_batches``, its default for an ``IterableDataset``), so they
    keep one width (``WIDTH``); the Trainer drops the last step's duplicates from the count it sent."""

    def __init__(self, queries: int) -> None:
        self.lists = Candidates(queries=queries)
        self.labels = self.lists.labels

    def __iter__(self):
        return (self.lists[i] for i in range(len(self.lists)))


def to_longest(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate padded candidate lists cut to the batch's longest list: batches (and ranks) differ in width."""
    width = max(int(row["mask"].sum()) for row in rows)
    return {
        "features": torch.stack([row["features"][:width] for row in rows]),
        "mask": torch.stack([row["mask"][:width] for row in rows]),
        "labels": torch.stack([row["labels"][:width] if row["labels"].ndim else row["labels"] for row in rows]),
    }


def cases() -> dict[str, dict[str, Any]]:
    """Every case: its model, data, collator and ``compute_metrics`` (built the same in the test's one process)."""
    out = {}
    for mode, (batch_eval_metrics, concat) in MODES.items():
        options = {"batch_eval_metrics": batch_eval_metrics, "eval_do_concat_batches": concat}
        ranking = ranking_compute_metrics(ks=TOP_K, metrics=("recall", "mrr"))
        out[f"ranking-{mode}"] = {
            "model": Scorer(),
            "data": Candidates(queries=QUERIES),
            "collator": to_longest,
            "compute_metrics": ranking,
            **options,
        }
        if mode != "apart":  # relevance rows, which the Trainer pads with -100 across batches and ranks
            out[f"relevance-{mode}"] = {
                "model": RelevanceScorer(),
                "data": RelevanceCandidates(queries=QUERIES),
                "collator": to_longest,
                "compute_metrics": ranking_compute_metrics(ks=TOP_K, metrics=("recall", "mrr")),
                **options,
            }
        if mode != "apart":  # an eval set without len, scored in both modes
            out[f"ranking-streamed-{mode}"] = {
                "model": Scorer(),
                "data": StreamedCandidates(queries=QUERIES),
                "collator": None,
                "compute_metrics": ranking_compute_metrics(ks=TOP_K, metrics=("recall", "mrr")),
                **options,
            }
        out[f"pointwise-{mode}"] = {
            "model": MaskedClicker(),
            "data": ConversionOfClicks(n=CLICKS),
            "collator": None,
            "compute_metrics": pointwise_compute_metrics(POINTWISE, tasks=("click", "conversion"), ignore_index=-100),
            **options,
        }
        # sample weights and user ids gathered as extra label_names entries
        out[f"weighted-{mode}"] = {
            "model": WeightedClicker(),
            "data": WeightedClicks(n=CLICKS),
            "collator": None,
            "compute_metrics": pointwise_compute_metrics(
                WEIGHTED, label_names=WEIGHTED_LABELS, weights="weight", groups="user_id"
            ),
            "label_names": list(WEIGHTED_LABELS),
            **options,
        }
        # segment ids (segmented_ne) and session ids (ranking metrics over flat rows) gathered the same way
        out[f"columns-{mode}"] = {
            "model": ColumnClicker(),
            "data": ColumnClicks(n=CLICKS),
            "collator": None,
            "compute_metrics": column_metrics(),
            "label_names": list(COLUMNS),
            **options,
        }
    return out


def trainer(case: dict[str, Any], output_dir: str, ddp: bool) -> transformers.Trainer:
    args = transformers.TrainingArguments(
        output_dir=output_dir,
        report_to=[],
        per_device_eval_batch_size=BATCH,
        batch_eval_metrics=case["batch_eval_metrics"],
        eval_do_concat_batches=case["eval_do_concat_batches"],
        use_cpu=True,
        disable_tqdm=True,
        **({"ddp_backend": "gloo"} if ddp else {}),
        **({"label_names": case["label_names"]} if "label_names" in case else {}),
    )
    return transformers.Trainer(
        model=case["model"],
        args=args,
        eval_dataset=case["data"],
        data_collator=case["collator"],
        compute_metrics=case["compute_metrics"],
    )


def ours(metrics: dict[str, float]) -> dict[str, float]:
    """The values of the adapter (the Trainer's loss and timings left out)."""
    return {key: float(value) for key, value in metrics.items() if key not in TRAINER_KEYS}


def joined(batches: Any) -> np.ndarray:
    """``predict()``'s batches kept apart (``eval_do_concat_batches=False``) padded with -100 and joined.

    Several label arrays (one per ``label_names`` entry, a tuple, per batch too) are joined as float64 columns.
    """
    if isinstance(batches, list) and isinstance(batches[0], tuple):
        return np.concatenate([joined(batch) for batch in batches])
    if isinstance(batches, tuple):
        return np.stack([np.asarray(a, dtype=np.float64).reshape(-1) for a in batches], 1)
    if not isinstance(batches, list):
        return np.asarray(batches)
    if batches[0].ndim == 1:
        return np.concatenate(batches)
    width = max(batch.shape[1] for batch in batches)
    return np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1])), constant_values=-100) for b in batches])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    try:  # the Trainer's arguments start the process group (accelerate's PartialState)
        transformers.TrainingArguments(output_dir=str(out / f"trainer-{rank}"), use_cpu=True, ddp_backend="gloo")
    except Exception:  # the environment cannot run 2 gloo ranks: the test skips, showing this
        (out / f"no-group{rank}").write_text(traceback.format_exc())
        raise
    report: dict[str, Any] = {"world_size": dist.get_world_size() if dist.is_initialized() else 1, "metrics": {}}
    report["backend"] = dist.get_backend() if dist.is_initialized() else None
    for name, case in cases().items():
        run = trainer(case, str(out / f"trainer-{rank}"), ddp=True)
        report["metrics"][name] = ours(run.evaluate())
        report["metrics"][name + "/again"] = ours(run.evaluate())  # a second evaluation starts afresh
        prediction = run.predict(case["data"])
        predictions, labels = joined(prediction.predictions), joined(prediction.label_ids)
        np.savez(out / f"rank{rank}-{name}.npz", predictions=predictions, labels=labels)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    if dist.is_initialized():
        # Leave the group before the interpreter exits: a rank that exits with the group's threads
        # still running may die in C++ ("terminate called without an active exception", SIGABRT).
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
