"""A step dict whose weights sit under another name than RecTaskInfo's default ``"weight"`` is warned for.

``{"click_pred": p, "click_label": y, "weights": w}`` with the default ``weight_name="weight"`` gave the
unweighted values without a word (a missing weight column means weight 1). The value stays what the docs
say; the first step now names the key and the ``weight_name`` that reads it. References: scikit-learn's
``log_loss`` with and without ``sample_weight``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

import torchmetrics_ext as tmx


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    p = torch.rand(400, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    y = (torch.rand(400, generator=gen, dtype=torch.float64) < p).long()
    w = torch.where(torch.rand(400, generator=gen) < 0.5, 5.0, 0.1).double()
    return p, y, w


def _ne(p: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> float:
    pn, yn = p.numpy(), y.numpy()
    wn = None if w is None else w.numpy()
    ctr = np.average(yn, weights=wn)
    entropy = -(ctr * np.log(ctr) + (1 - ctr) * np.log(1 - ctr))
    return float(log_loss(yn, pn, sample_weight=wn) / entropy)


@pytest.mark.parametrize("key", ["weights", "sample_weight", "click_weight", "Weight"])
def test_a_weight_lookalike_key_is_warned_for_and_naming_it_weights_the_task(key):
    p, y, w = _data()
    module = tmx.RecMetricModule([tmx.RecTaskInfo("click", "click_label", "click_pred")], ["ne"], throughput=False)
    with pytest.warns(UserWarning, match=rf"no weight column 'weight'.*holds \['{key}'\].*weight_name='{key}'"):
        module.update({"click_pred": p, "click_label": y, key: w})
    # the documented value is kept: unweighted
    assert module.compute()["ne/click"].item() == pytest.approx(_ne(p, y, None), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.update({"click_pred": p, "click_label": y, key: w})  # said once, at the first step
    # following the warning weights the task
    named = tmx.RecMetricModule(
        [tmx.RecTaskInfo("click", "click_label", "click_pred", weight_name=key)], ["ne"], throughput=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named.update({"click_pred": p, "click_label": y, key: w})
    assert named.compute()["ne/click"].item() == pytest.approx(_ne(p, y, w), rel=1e-12)


def test_the_task_s_own_lookalike_is_suggested_for_it():
    p, y, w = _data(1)
    tasks = [tmx.RecTaskInfo("click", "click_label", "click_pred"), tmx.RecTaskInfo("like", "like_label", "like_pred")]
    module = tmx.RecMetricModule(tasks, ["ne"], throughput=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.update(
            {"click_pred": p, "click_label": y, "like_pred": p, "like_label": y, "click_weight": w, "like_weight": w}
        )
    said = [str(c.message) for c in caught if "no weight column 'weight'" in str(c.message)]
    assert len(said) == 2
    assert "RecTaskInfo('click', ..., weight_name='click_weight')" in said[0]
    assert "RecTaskInfo('like', ..., weight_name='like_weight')" in said[1]


@pytest.mark.parametrize(
    ("tasks", "extra"),
    [
        # a "weight" column is there: the default reads it
        ([tmx.RecTaskInfo("click", "click_label", "click_pred")], {"weight": None, "weights": None}),
        # weight_name=None: the task has no weights
        ([tmx.RecTaskInfo("click", "click_label", "click_pred", weight_name=None)], {"weights": None}),
        # the lookalike is another task's own weight column
        (
            [
                tmx.RecTaskInfo("click", "click_label", "click_pred", weight_name="click_weight"),
                tmx.RecTaskInfo("like", "like_label", "like_pred"),
            ],
            {"click_weight": None},
        ),
        # no key like a weight
        ([tmx.RecTaskInfo("click", "click_label", "click_pred")], {"user": "ids"}),
    ],
)
def test_no_warning_where_nothing_is_left_unread(tasks, extra):
    p, y, w = _data(2)
    out = {"click_pred": p, "click_label": y, "like_pred": p, "like_label": y}
    out.update({k: (torch.arange(400) if v == "ids" else w) for k, v in extra.items()})
    if len(tasks) == 1:
        out = {k: v for k, v in out.items() if not k.startswith("like")}
    module = tmx.RecMetricModule(tasks, ["ne"], throughput=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.update(out)
    weighted = tasks[0].weight_name is not None and tasks[0].weight_name in out
    assert module.compute()["ne/click"].item() == pytest.approx(_ne(p, y, w if weighted else None), rel=1e-12)
