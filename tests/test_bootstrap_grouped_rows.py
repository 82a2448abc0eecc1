"""``BootStrapper`` around ``GroupedAUC``/``GroupedAUPRC`` resamples rows, not groups (users).

GAUC averages per-user values, so the unit to resample is the user: a row bootstrap keeps every
user in every resample (their rows repeated or dropped), and its spread is not a user-level one.
The metric warns (once per bootstrap copy), naming the two routes that do resample users; updates
outside a bootstrap do not warn. References: scikit-learn's per-user ``roc_auc_score``, users
resampled with NumPy; the ``weight_groups=True`` route checked against the same per-user values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.wrappers import BootStrapper

import torchmetrics_ext as tmx


def _users(seed: int = 0, users: int = 200, rows: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    skill = torch.rand(users, generator=g).repeat_interleave(rows)  # users differ: a user-level spread
    target = (torch.rand(users * rows, generator=g) < 0.4).long()
    preds = (skill * target + torch.rand(users * rows, generator=g, dtype=torch.float64)).clamp(0, 1)
    return preds, target, torch.arange(users).repeat_interleave(rows)


def _per_user_auc(preds: np.ndarray, target: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = []
    for u in np.unique(groups):
        rows = groups == u
        if 0 < target[rows].sum() < rows.sum():
            out.append(roc_auc_score(target[rows], preds[rows]))
    return np.array(out)


@pytest.mark.parametrize("cls", [tmx.GroupedAUC, tmx.GroupedAUPRC])
def test_a_grouped_metric_inside_a_bootstrapper_warns_once_per_copy(cls: type) -> None:
    preds, target, groups = _users()
    torch.manual_seed(0)
    boot = BootStrapper(cls(), num_bootstraps=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        boot.update(preds, target, groups)
        boot.update(preds, target, groups)  # marked: no second walk, no second warning
    assert len(caught) == 3
    assert all(c.filename == __file__ for c in caught)  # the user's update line
    assert "resamples rows, not groups" in str(caught[0].message)
    assert f"{cls.__name__}(weight_groups=True)" in str(caught[0].message)
    metric = cls()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.update(preds, target, groups)
        metric.update(preds, target, groups)


def test_the_row_bootstrap_is_narrower_than_a_user_bootstrap() -> None:
    """Users whose AUCs differ (40 rows each): the row bootstrap's std is about a third of the users' one."""
    preds, target, groups = _users(users=100, rows=40)
    per_user = _per_user_auc(preds.numpy(), target.numpy(), groups.numpy())
    rng = np.random.default_rng(0)
    user_boot = np.array([per_user[rng.integers(0, per_user.size, per_user.size)].mean() for _ in range(300)])
    torch.manual_seed(0)
    boot = BootStrapper(tmx.GroupedAUC(), num_bootstraps=100, sampling_strategy="multinomial")
    with pytest.warns(UserWarning, match="resamples rows, not groups"):
        boot.update(preds, target, groups)
    row_std = boot.compute()["std"].item()
    assert row_std < 0.5 * user_boot.std()  # measured: 0.0057 against 0.0179


def test_weight_groups_with_count_weights_is_a_user_bootstrap() -> None:
    """The route the warning names: weights times each user's Poisson count, one task per bootstrap."""
    preds, target, groups = _users(1, users=60)
    boots = 8
    counts = torch.poisson(torch.ones(boots, 60, dtype=torch.float64), generator=torch.Generator().manual_seed(2))
    metric = tmx.GroupedAUC(num_tasks=boots, weight_groups=True)
    metric.update(preds.expand(boots, -1), target.expand(boots, -1), groups, weights=counts[:, groups])
    values = metric.compute()
    p, t, g = preds.numpy(), target.numpy(), groups.numpy()
    for b in range(boots):
        num = den = 0.0
        for u in range(60):
            rows = g == u
            c = counts[b, u].item()
            if c > 0 and 0 < t[rows].sum() < rows.sum():
                num += c * rows.sum() * roc_auc_score(t[rows], p[rows])
                den += c * rows.sum()
        assert values[b].item() == pytest.approx(num / den, rel=1e-9)
