"""TorchMetrics' ``ignore_index`` (padded or unlabelled candidates) in a ``RecMetricModule`` and in ``evaluate``.

Neither takes a ``mask`` (the module's step is a dict of flat columns, DESIGN's ``update(model_out)``; evaluate
reads rows): the documented recipes (docs/ranking.md, "Padding in a module and in evaluate") drop those rows
before the metrics see them. Each recipe is checked against ranx over the unpadded data.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

import torchmetrics_ext as tmx
from torchmetrics_ext.evaluate import evaluate
from torchmetrics_ext.evaluate.sources import InvalidDataError

PAD = -100
KS = (1, 3, 5)
NAMES = [f"{metric}@{k}" for metric in ("ndcg", "recall", "mrr") for k in KS]


def _padded(seed: int, users: int = 10, width: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(users, width)`` tie-free scores, graded labels and the mask of real candidates (3 to ``width`` per user)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randperm(users * width, generator=gen).view(users, width).double() / (users * width) + 0.01
    labels = torch.randint(0, 3, (users, width), generator=gen)
    lengths = torch.randint(3, width + 1, (users, 1), generator=gen)
    mask = torch.arange(width) < lengths
    labels[:, 0] = torch.clamp(labels[:, 0], min=1)  # every user holds a relevant real candidate
    labels[~mask] = PAD
    return scores, labels, mask


def _ranx(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    ranx = pytest.importorskip("ranx")
    qrels, run = {}, {}
    for u in range(scores.shape[0]):
        kept = mask[u].nonzero().flatten().tolist()
        qrels[f"u{u}"] = {f"d{i}": int(labels[u, i]) for i in kept}
        run[f"u{u}"] = {f"d{i}": float(scores[u, i]) for i in kept}
    return {key: float(value) for key, value in ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), NAMES).items()}


def _module() -> tmx.RecMetricModule:
    return tmx.RecMetricModule([tmx.RecTaskInfo("click", session_id_name="session")], NAMES, throughput=False)


@pytest.mark.parametrize("seed", range(2))
def test_module_flat_rows_marked_by_ignore_index_dropped_from_the_step_give_ranx(seed):
    scores, labels, mask = _padded(seed)
    sessions = torch.arange(scores.shape[0]).unsqueeze(1).expand_as(scores)
    step = {"prediction": scores.flatten(), "label": labels.flatten(), "session": sessions.flatten()}
    module = _module()
    with pytest.raises(ValueError, match=r"model_out\['label'\].*finite values >= 0, got values in \[-100"):
        module.update(step)  # -100 is no relevance: refused, and nothing was counted
    keep = step["label"] != PAD  # the recipe: TorchMetrics' ignore_index=-100
    for half in (slice(0, 40), slice(40, None)):  # a session split across two steps stays one query
        module.update({name: column[half][keep[half]] for name, column in step.items()})
    ours = {key.split("/")[0]: value.item() for key, value in module.compute().items()}
    theirs = _ranx(scores, labels, mask)
    for name in NAMES:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name


@pytest.mark.parametrize("seed", range(2))
def test_module_padded_batches_flattened_by_their_mask_with_dataset_wide_ids_give_ranx(seed):
    scores, labels, mask = _padded(seed)
    module, ranking = _module(), tmx.RankingMetrics(ks=KS, metrics=("ndcg", "recall", "mrr"))
    for first in (0, 6):  # two batches of users; ids = the user's position in the dataset, never in the batch
        rows = slice(first, first + 6)
        batch_scores, batch_labels, batch_mask = scores[rows], labels[rows], mask[rows]
        users = torch.arange(first, first + batch_scores.shape[0]).unsqueeze(1).expand_as(batch_mask)
        module.update(
            {"prediction": batch_scores[batch_mask], "label": batch_labels[batch_mask], "session": users[batch_mask]}
        )
        ranking.update(batch_scores, batch_labels, mask=batch_mask)  # the class takes the mask as it is
    ours = {key.split("/")[0]: value.item() for key, value in module.compute().items()}
    padded = {key: value.item() for key, value in ranking.compute().items()}
    theirs = _ranx(scores, labels, mask)
    for name in NAMES:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name
        assert padded[name] == pytest.approx(theirs[name], abs=1e-9), name


def _table(seed: int) -> tuple[pa.Table, torch.Tensor, torch.Tensor, torch.Tensor]:
    scores, labels, mask = _padded(seed)
    sessions = torch.arange(scores.shape[0]).unsqueeze(1).expand_as(scores)
    table = pa.table(
        {"score": scores.flatten().numpy(), "label": labels.flatten().numpy(), "session": sessions.flatten().numpy()}
    )
    return table, scores, labels, mask


def test_evaluate_refuses_the_marker_naming_its_rows_and_the_two_recipes_give_ranx():
    table, scores, labels, mask = _table(3)
    tasks, padded_rows = {"click": ("score", "label")}, int((~mask).sum())
    with pytest.raises(InvalidDataError, match=rf"column 'label' \(labels of task 'click'\) has {padded_rows} rows "):
        evaluate(table, tasks, NAMES, session="session")
    theirs = _ranx(scores, labels, mask)
    filtered = evaluate(table.filter(pc.not_equal(table["label"], PAD)), tasks, NAMES, session="session")
    skipped = evaluate(table, tasks, NAMES, session="session", on_invalid="skip", batch_size=24)
    assert skipped.rows_skipped == padded_rows and filtered.rows_skipped == 0
    assert [(p.column, p.reason, p.count) for p in skipped.problems] == [("label", "that are negative", padded_rows)]
    for name in NAMES:
        assert filtered.values[f"{name}/click"] == pytest.approx(theirs[name], abs=1e-9), name
        assert skipped.values[f"{name}/click"] == pytest.approx(theirs[name], abs=1e-9), name


def test_evaluate_pandas_frame_filtered_first_gives_ranx():
    table, scores, labels, mask = _table(4)
    frame = table.to_pandas()
    result = evaluate(frame[frame["label"] != PAD], {"click": ("score", "label")}, NAMES, session="session")
    theirs = _ranx(scores, labels, mask)
    for name in NAMES:
        assert result.values[f"{name}/click"] == pytest.approx(theirs[name], abs=1e-9), name
    assert np.count_nonzero(frame["label"] == PAD) == int((~mask).sum())
