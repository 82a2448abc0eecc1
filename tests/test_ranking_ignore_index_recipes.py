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


@pytest.mark.parametrize("mark", [-100, -1])
@pytest.mark.parametrize("metrics", [NAMES, [*NAMES, "ne"]])
def test_module_refusing_a_padding_mark_points_to_leaving_the_rows_out_before_metric_tasks(mark, metrics):
    """A label of exactly -100 or -1 is padding far more often than a task of other values: the refusal names the
    step recipe and docs/ranking.md's section first (it named only `metric_tasks`), and that recipe gives ranx."""
    scores, labels, mask = _padded(0)
    labels[~mask] = mark
    sessions = torch.arange(scores.shape[0]).unsqueeze(1).expand_as(scores)
    step = {"prediction": scores.flatten(), "label": labels.flatten().double(), "session": sessions.flatten()}
    module = tmx.RecMetricModule([tmx.RecTaskInfo("click", session_id_name="session")], metrics, throughput=False)
    with pytest.raises(ValueError) as refused:
        module.update(step)
    message = str(refused.value)
    pointer = (
        f"If {mark} marks padded or unlabelled rows (TorchMetrics' `ignore_index={mark}`), leave them out of the step "
        "before "
        f"`update`: `keep = model_out['label'] != {mark}`, then "
        "`module.update({name: column[keep] for name, column in model_out.items()})` "
        "(docs/ranking.md, 'Padding in a module and in evaluate')."
    )
    assert pointer in message and message.index(pointer) < message.index("metric_tasks")
    keep = step["label"] != mark
    if "ne" in metrics:  # NE reads 0/1 labels: the graded labels become clicks for it, ranking reads them as they are
        step["label"] = step["label"].clamp(max=1)
        labels = labels.clamp(max=1)
    module.update({name: column[keep] for name, column in step.items()})
    ours = {key.split("/")[0]: value.item() for key, value in module.compute().items()}
    theirs = _ranx(scores, labels, mask)
    for name in NAMES:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-9), name


@pytest.mark.parametrize("marks", [(-3,), (-100, -1), (-2, -100)])
def test_module_refusing_other_negative_labels_says_nothing_of_padding(marks):
    """Only a column whose negative labels are all one usual mark (-100 or -1) gets the padding pointer."""
    labels = torch.tensor([1.0, 0.0, *marks, 2.0])
    step = {"prediction": torch.rand(labels.numel()), "label": labels, "session": torch.zeros(labels.numel()).long()}
    with pytest.raises(ValueError, match=r"finite values >= 0, got values in .*metric_tasks") as refused:
        _module().update(step)
    assert "padded rows" not in str(refused.value)


def test_hugging_face_adapter_keeps_its_own_padding_advice():
    """The Trainer's callable names `ignore_index`, never the module's step recipe (it builds the step itself)."""
    pytest.importorskip("transformers")
    from transformers import EvalPrediction

    from torchmetrics_ext.integrations.huggingface import pointwise_compute_metrics

    call = EvalPrediction(predictions=np.array([0.5, -1.0, 2.0, 0.1]), label_ids=np.array([1, -1, 0, 1]))
    with pytest.raises(ValueError, match=r"got values in \[-1, 1\]") as refused:
        pointwise_compute_metrics(["ne"], ignore_index=None)(call)
    assert "padded rows" not in str(refused.value) and "module.update" not in str(refused.value)


def _ne(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    ce = -np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / w.sum()
    rate = np.sum(w * y) / w.sum()
    return ce / -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))


@pytest.mark.parametrize("weighted", [False, True])
def test_module_of_ne_refusing_minus_one_gives_one_recipe_that_keeps_the_other_task_whole(weighted):
    """A module with NE and -1 labels said two recipes (the metric's weight 0, then leaving the rows out of the step)
    and the columns it reads; it now says one. A task ranked in no session gets weight 0 naming its weight column
    (leaving the rows out of the step would drop them for the other tasks too); followed literally, it gives NE of
    the labelled rows for that task and of every row for the other. Reference: NE by its formula in numpy."""
    p = np.array([0.2, 0.7, 0.4, 0.9, 0.3, 0.6])
    y = np.array([1.0, -1.0, 0.0, 1.0, -1.0, 0.5])
    like = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 2.0]) if weighted else np.ones(6)
    tasks = [tmx.RecTaskInfo("click", "y_click", "p_click", "w_click"), tmx.RecTaskInfo("like", "y_like", "p_like")]
    step = {
        "p_click": torch.tensor(p),
        "y_click": torch.tensor(y),
        "p_like": torch.tensor(p),
        "y_like": torch.tensor(like),
    }
    if weighted:
        step["w_click"] = torch.tensor(w)
    module = tmx.RecMetricModule(tasks, ["ne"], throughput=False)
    with pytest.raises(ValueError) as refused:
        module.update(step)
    message = str(refused.value)
    recipe = (
        "If -1 marks rows without a label, give them weight 0 and any label in [0, 1]: `model_out['w_click'] = "
        + ("model_out['w_click'] * " if weighted else "")
        + "(model_out['y_click'] != -1)`, `model_out['y_click'] = model_out['y_click'].clamp(min=0)`"
    )
    assert recipe in message, message
    assert "leave them out" not in message and "reads labels from" not in message
    assert "`metric_tasks`" in message and message.index(recipe) < message.index("metric_tasks")
    assert len(message) < 700  # 976 characters before, for one task
    model_out = dict(step)
    model_out["w_click"] = (
        (model_out["w_click"] * (model_out["y_click"] != -1)) if weighted else (model_out["y_click"] != -1)
    )
    model_out["y_click"] = model_out["y_click"].clamp(min=0)
    module.update(model_out)
    values = {key: value.item() for key, value in module.compute().items()}
    kept = y != -1
    assert values["ne/click"] == pytest.approx(_ne(p[kept], y[kept], w[kept]), rel=1e-12)
    assert values["ne/like"] == pytest.approx(_ne(p, like, np.ones(6)), rel=1e-12)  # every row: none left the step


def test_module_task_without_a_weight_column_is_told_the_weight_name_option():
    """A task built with `weight_name=None` reads no weight column: the recipe names the option that gives it one,
    and following it (the column and the option) gives NE of the labelled rows (numpy's formula)."""
    p, y = np.array([0.2, 0.7, 0.4, 0.9]), np.array([1.0, -1.0, 0.0, 1.0])
    step = {"prediction": torch.tensor(p), "label": torch.tensor(y)}
    with pytest.raises(ValueError) as refused:
        tmx.RecMetricModule([tmx.RecTaskInfo("click", weight_name=None)], ["ne"], throughput=False).update(step)
    assert "(a weight column for the task: `RecTaskInfo(..., weight_name='weight')`)" in str(refused.value)
    module = tmx.RecMetricModule([tmx.RecTaskInfo("click", weight_name="weight")], ["ne"], throughput=False)
    module.update(
        {"prediction": step["prediction"], "label": step["label"].clamp(min=0), "weight": step["label"] != -1}
    )
    kept = y != -1
    assert module.compute()["ne/click"].item() == pytest.approx(_ne(p[kept], y[kept], np.ones(3)), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
def test_module_recipe_for_minus_one_gives_the_task_a_weight_column_of_its_own_where_others_read_its_column(weighted):
    """Two tasks of RecTaskInfo's default weight_name read one 'weight' column. The weight-0 recipe for the -1 labels
    of one of them wrote that shared column (`model_out['weight'] = ...`), which zeroed the rows for the other task
    too: followed literally, `ne/click` lost the rows where `conv` is -1. It now names a column of the task's own
    and the option to read it; followed literally, `conv` gets NE of its labelled rows and `click` of every row.
    Reference: NE by its formula in numpy."""
    p = np.array([0.2, 0.7, 0.4, 0.9, 0.3, 0.6])
    click = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    conv = np.array([1.0, -1.0, 0.0, 1.0, -1.0, 0.0])
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 2.0]) if weighted else np.ones(6)
    tasks = [tmx.RecTaskInfo("click", "y_click", "p_click"), tmx.RecTaskInfo("conv", "y_conv", "p_conv")]
    step = {name: torch.tensor(v) for name, v in [("p_click", p), ("y_click", click), ("p_conv", p), ("y_conv", conv)]}
    if weighted:
        step["weight"] = torch.tensor(w)
    with pytest.raises(ValueError) as refused:
        tmx.RecMetricModule(tasks, ["ne"], throughput=False).update(step)
    message = str(refused.value)
    recipe = (
        "`model_out['weight_conv'] = "
        + ("model_out['weight'] * " if weighted else "")
        + "(model_out['y_conv'] != -1)` (a weight column of the task's own, read by it alone: "
        "`RecTaskInfo(..., weight_name='weight_conv')`; other tasks read 'weight')"
    )
    assert recipe in message, message
    model_out = dict(step)
    model_out["weight_conv"] = (
        (model_out["weight"] * (model_out["y_conv"] != -1)) if weighted else (model_out["y_conv"] != -1)
    )
    model_out["y_conv"] = model_out["y_conv"].clamp(min=0)
    tasks[1] = tmx.RecTaskInfo("conv", "y_conv", "p_conv", "weight_conv")
    module = tmx.RecMetricModule(tasks, ["ne"], throughput=False)
    module.update(model_out)
    values = {key: value.item() for key, value in module.compute().items()}
    kept = conv != -1
    assert values["ne/conv"] == pytest.approx(_ne(p[kept], conv[kept], w[kept]), rel=1e-12)
    assert values["ne/click"] == pytest.approx(_ne(p, click, w), rel=1e-12)  # every row, whole


@pytest.mark.filterwarnings("ignore:.*has no weight column")  # the first step's, before the recipe's column
def test_module_recipe_for_minus_one_is_weight_zero_where_no_ranking_metric_reads_the_task_sessions():
    """A task that names a session column no ranking metric of the module reads (pointwise metrics alone) was told to
    leave its -1 rows out of the step, which drops them for every task: followed, `ne/click` lost the rows where
    `conv` is -1. Weight 0 is the recipe there, as for a task without sessions. Reference: NE by its formula in numpy.
    """
    p = np.array([0.2, 0.7, 0.4, 0.9, 0.3, 0.6])
    click = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    conv = np.array([1.0, -1.0, 0.0, 1.0, -1.0, 0.0])
    tasks = [
        tmx.RecTaskInfo("click", "y_click", "p_click", "w_click", session_id_name="sid"),
        tmx.RecTaskInfo("conv", "y_conv", "p_conv", "w_conv", session_id_name="sid"),
    ]
    step = {name: torch.tensor(v) for name, v in [("p_click", p), ("y_click", click), ("p_conv", p), ("y_conv", conv)]}
    step["sid"] = torch.tensor([0, 0, 0, 1, 1, 1])
    module = tmx.RecMetricModule(tasks, ["ne", "session_pairwise_auc"], throughput=False)  # neither ranks weight 0
    with pytest.raises(ValueError) as refused:
        module.update(step)
    message = str(refused.value)
    assert "`model_out['w_conv'] = (model_out['y_conv'] != -1)`" in message, message
    assert "leave them out of the step" not in message
    step["w_conv"] = step["y_conv"] != -1
    step["y_conv"] = step["y_conv"].clamp(min=0)
    module.update(step)
    values = {key: value.item() for key, value in module.compute().items()}
    kept = conv != -1
    assert values["ne/conv"] == pytest.approx(_ne(p[kept], conv[kept], np.ones(4)), rel=1e-12)
    assert values["ne/click"] == pytest.approx(_ne(p, click, np.ones(6)), rel=1e-12)  # every row, whole
