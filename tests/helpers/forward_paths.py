"""The two ``forward`` paths of the package's metrics, side by side (tests of ``TaskMetric.forward``'s shortcut).

``TaskMetric.forward`` skips TorchMetrics' copy/reset/update/compute/reduce round for metrics of
``sum`` and ``cat`` states; these helpers run the same metric through TorchMetrics' round, record what
a call gives (value, error, warnings), and check that the shortcut never enters the round.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from torchmetrics import Metric


def torchmetrics_forward(metric: Any, *args: Any, **batch: Any) -> Any:
    """TorchMetrics' own round (``TaskMetric.forward`` with the shortcut refused)."""
    metric.__dict__["_sums_forward"] = lambda: False
    try:
        return metric(*args, **batch)
    finally:
        del metric.__dict__["_sums_forward"]


def outcome(call: Callable[[], Any]) -> tuple[Any, Any, list[str]]:
    """``(value, (error type, message) or None, warnings as text)`` of ``call()`` (ValueError/TypeError caught)."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        try:
            value, error = call(), None
        except (ValueError, TypeError) as err:
            value, error = None, (type(err), str(err))
    return value, error, [f"{w.category.__name__}: {w.message}" for w in seen]


def assert_forward_skips_round(factory: Callable[[], Any], make: Callable[[int, int], dict], monkeypatch: Any) -> None:
    """A metric's ``forward`` does not enter TorchMetrics' round; its twin forced through it does."""
    calls = []
    original = Metric._forward_reduce_state_update

    def spy(self: Metric, *args: Any, **kwargs: Any) -> Any:
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Metric, "_forward_reduce_state_update", spy)
    metric = factory()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.update(**make(0, 6))
        metric(**make(1, 5))
        assert calls == []
        torchmetrics_forward(metric, **make(2, 5))
    assert calls == [type(metric).__name__]


def forward_outcomes(
    fast: Any, slow: Any, batch: dict
) -> tuple[tuple[Any, Any, list[str]], tuple[Any, Any, list[str]]]:
    """:func:`outcome` of ``fast(**batch)`` and of ``slow`` forced through TorchMetrics' round; their errors and
    warnings asserted equal (the caller compares the values and states with its own strictness)."""
    got = outcome(lambda: fast(**batch))
    expected = outcome(lambda: torchmetrics_forward(slow, **batch))
    assert got[1:] == expected[1:], (got[1:], expected[1:])
    return got, expected
