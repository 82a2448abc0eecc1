"""RecMetricModule's own warnings point at the user's line (its helpers live in other files than module.py).

Each warning is raised inside a helper of ``torchmetrics_ext/_module_*.py``; a fixed ``stacklevel`` there would
point the warning at the package as soon as a frame came between the helper and the user's call (a helper
moved into a wrapper, a method split in two, ``from_config`` around the constructor), without failing anything
else (``test_update_warning_locations.py`` covers those paths). The reference is the line
of the call in this file (a one-line lambda's).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import torchmetrics_ext as tmx

STEP = {"prediction": torch.tensor([0.2, 0.7, 0.4, 0.9]), "label": torch.tensor([0.0, 1.0, 1.0, 1.0])}


def _caught(call: Callable[[], Any], match: str) -> tuple[str, int]:
    """``(filename, lineno)`` of the one warning matching ``match`` that ``call()`` raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    found = [w for w in caught if match in str(w.message)]
    assert len(found) == 1, [str(w.message) for w in caught]
    return found[0].filename, found[0].lineno


def _line_of(call: Callable[[], Any]) -> int:
    """The line of this file that makes the call: a one-line lambda's own line."""
    return call.__code__.co_firstlineno


def test_an_unread_weight_name_is_warned_at_the_first_update() -> None:
    task = tmx.RecTaskInfo("click", weight_name="click_weight")
    module = tmx.RecMetricModule([task], {"ctr": "ctr"}, throughput=False)
    update = lambda: module.update(STEP)  # noqa: E731
    filename, lineno = _caught(update, "has no weight column 'click_weight'")
    assert (filename, lineno) == (__file__, _line_of(update))


def test_a_compute_group_metric_given_updated_is_warned_at_the_constructor() -> None:
    ne = tmx.NormalizedEntropy()
    ne.update(STEP["prediction"], STEP["label"])
    build = lambda: tmx.RecMetricModule(["click"], {"ne": ne, "log_loss": "log_loss"}, throughput=False)  # noqa: E731
    filename, lineno = _caught(build, "were given already updated")
    assert (filename, lineno) == (__file__, _line_of(build))


@pytest.mark.parametrize("read", ["compute", "local_compute"])
def test_a_member_changed_or_a_leader_reset_alone_is_warned_at_compute(read: str) -> None:
    module = tmx.RecMetricModule(["click"], {"ne": "ne", "log_loss": "log_loss"}, throughput=False)
    assert module.compute_groups == [["ne", "log_loss"]]
    module.update(STEP)
    module.metrics["log_loss"].update(STEP["prediction"], STEP["label"])  # a member's own update: dropped
    values = lambda: getattr(module, read)()  # noqa: E731
    filename, lineno = _caught(values, "was changed outside the module")
    assert (filename, lineno) == (__file__, _line_of(values))
    module.metrics["ne"].reset()  # the leader alone: the member's states are cleared with it
    module.update(STEP)
    filename, lineno = _caught(values, "also cleared the states of")
    assert (filename, lineno) == (__file__, _line_of(values))
