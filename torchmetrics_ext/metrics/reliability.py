"""The reliability curve (calibration per bin of the prediction) as a :class:`torchmetrics.Metric`.

Three float64 ``(num_tasks, num_bins)`` sums reduced with ``sum`` across batches and ranks
(constant memory); the math lives in ``torchmetrics_ext.functional.reliability``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from torchmetrics_ext.functional.reliability import (
    _reliability_compute,
    _reliability_edges,
    _reliability_entries,
    _reliability_update,
    _uniform_edges,
)
from torchmetrics_ext.metrics.base import InputDomains, TaskMetric
from torchmetrics_ext.utilities.checks import check_flag, format_pointwise
from torchmetrics_ext.utilities.errors import WrongTypeError

__all__ = ["Reliability"]


class Reliability(TaskMetric):
    r"""Reliability curve: per bin of the prediction, its weighted mean prediction, label rate and weight.

    .. math::
        \bar p_b = \frac{\sum_{i \in b} w_i p_i}{\sum_{i \in b} w_i}, \qquad
        \bar y_b = \frac{\sum_{i \in b} w_i y_i}{\sum_{i \in b} w_i}

    A calibrated model has :math:`\bar y_b \approx \bar p_b` in every bin (the diagonal of the
    reliability diagram, which :meth:`plot` draws); :class:`~torchmetrics_ext.Calibration` is
    the same ratio over all bins at once. ``update(preds, target, weights=None)``.

    Args:
        num_tasks: number of tasks ``T``; inputs are ``(N,)`` for one task or ``(T, N)``.
        num_bins: number of uniform bins over [0, 1] (ignored when ``edges`` is given).
        edges: increasing bin edges, e.g. ``[0, 0.01, 0.02, 0.05, 0.1, 1]`` for click-through
            rates, where uniform bins put almost every prediction in the first bin. Bin ``b``
            holds :math:`e_b \le p < e_{b+1}`; the last bin also holds ``p = 1``; predictions
            outside the edges fall in the end bins.
        from_logits: ``preds`` are logits (binned after the sigmoid).
        validate_args: check each batch; a rejected batch raises and changes nothing.
        kwargs: TorchMetrics options (``sync_on_compute``, ``process_group``, ...).

    Returns:
        ``compute()`` gives ``{"mean_prediction", "label_rate", "weight"}``, each ``(B,)`` for one
        task and ``(T, B)`` otherwise. A bin without weight has ``nan`` mean prediction and label
        rate without a warning (its weight says why); a task without any weight warns
        (``UndefinedMetricWarning``).

    Raises:
        ValueError: NaN/inf ``preds``, probabilities outside [0, 1], labels outside [0, 1],
            negative weights, mismatched shapes/devices, a wrong task dimension, or bad
            ``num_bins``/``edges``.
        TypeError: non-tensor inputs or non-floating ``preds``.

    Note:
        State: three float64 ``(T, B)`` sums (constant memory, summed across ranks), so
        :class:`~torchmetrics_ext.Windowed` gives a recent-window curve too. A curve per task is
        not one number per key: :class:`~torchmetrics_ext.RecMetricModule` refuses it
        (``value_ndim = 1``); log :class:`~torchmetrics_ext.Calibration` there and plot this one.

        Unchecked (``validate_args=False``), a NaN score is counted in the last bin, where a sorted
        search puts it (its weight and label count there, in the window too), and that bin's
        ``mean_prediction`` is ``nan`` until :meth:`reset`; other bins keep their values. Scores
        outside the edges fall in the end bins. Nothing is read back from the device for it.

    Examples:
        >>> import torch
        >>> from torchmetrics_ext import Reliability
        >>> metric = Reliability(num_bins=2)
        >>> metric.update(torch.tensor([0.1, 0.2, 0.7, 0.9]), torch.tensor([0, 1, 1, 1]))
        >>> curve = metric.compute()
        >>> curve["mean_prediction"], curve["label_rate"]
        (tensor([0.1500, 0.8000], dtype=torch.float64), tensor([0.5000, 1.0000], dtype=torch.float64))
    """

    is_differentiable: bool = True  # the mean predictions (label rates and weights do not depend on preds)
    _keeps_value_shape = True  # (B,) also for one bin
    higher_is_better: bool | None = None
    _dict_value_entry = '"label_rate"'  # a dict value: no metric arithmetic (TensorArithmetic)
    value_ndim = 1  # a curve over the bins per task: used standalone, not in a RecMetricModule

    def __init__(
        self,
        num_tasks: int = 1,
        *,
        num_bins: int = 10,
        edges: Sequence[float] | Tensor | None = None,
        from_logits: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_tasks, **kwargs)
        from_logits = check_flag("from_logits", from_logits)
        self.edges = _reliability_edges(num_bins, edges)
        self.num_bins = self.edges.numel() - 1
        self.from_logits = from_logits
        # every state depends on the edges and on from_logits: non-default ones are part of the names,
        # so a MetricCollection never merges two Reliability metrics whose first batch agreed
        uniform = torch.equal(self.edges, _uniform_edges(self.num_bins))
        self._uniform = uniform  # binned arithmetically
        edges_tag = "" if uniform else "edges_" + hashlib.sha1(self.edges.numpy().tobytes()).hexdigest()[:12]
        # from_logits changes how predictions arrive, not the sums: a version-1 checkpoint's states
        # without it are these; its plain names are the uniform edges' states (see _default_settings_name)
        names = []
        for plain in ("bin_weight", "bin_pred_sum", "bin_target_sum"):
            edged = f"{plain}_{edges_tag}" if edges_tag else plain
            names.append(self._setting_state_name(edged, "logits" if from_logits else ""))
            if edges_tag:
                self._default_settings_name(plain, names[-1])
        # and validate_args names them in memory only (see TaskMetric._unchecked_state_name)
        self._names = tuple(self._unchecked_state_name(name) for name in names)
        for name in self._names:
            self.add_state(name, torch.zeros(num_tasks, self.num_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def _format(
        self, preds: Tensor, target: Tensor, weights: Tensor | None, validate: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        p, t, w = format_pointwise(
            preds, target, weights, self.num_tasks, from_logits=self.from_logits, validate=validate
        )
        assert t is not None
        return p, t, w

    def _validate(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        self._format(preds, target, weights, validate=True)

    @property
    def input_domains(self) -> InputDomains:
        """Probabilities (or logits) and labels in [0, 1]."""
        return InputDomains("probability", "unit", self.from_logits)

    @property
    def shared_statistics_key(self) -> Hashable:
        """Reliability metrics with the same edges and ``from_logits`` hold equal states."""
        return ("Reliability", tuple(self.edges.tolist()), self.from_logits, self.num_tasks)

    @property
    def _histogram_states(self) -> tuple[str, ...]:
        """The three sums, filled sample by sample at one ``(task, bin)`` index per sample.

        :class:`~torchmetrics_ext.Windowed` keeps each update's bin indices and values for them
        instead of three dense ``(T, B)`` sums per update.
        """
        return self._names

    def _histogram_entries(
        self, preds: Tensor, target: Tensor, weights: Tensor | None = None
    ) -> tuple[Tensor, Tensor] | None:
        """What ``update`` would add to the three sums, validated as ``update`` does, without adding it.

        Returns:
            ``(flat index (T, N), values (3, T, N))`` in the order of the states; ``None`` for an empty batch.
        """
        p, t, w = self._format(preds, target, weights, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return None
        return _reliability_entries(p, t, w, self.edges, self.from_logits, self._uniform)

    def update(self, preds: Tensor, target: Tensor, weights: Tensor | None = None) -> None:
        """Accumulate one batch: ``preds``/``target`` ``(N,)`` or ``(T, N)``, optional ``weights``."""
        p, t, w = self._format(preds, target, weights, validate=self._check_inputs)
        if p.shape[-1] == 0:
            return
        for name, value in zip(self._names, _reliability_update(p, t, w, self.edges, self.from_logits, self._uniform)):
            getattr(self, name).add_(value)

    def compute(self) -> dict[str, Tensor]:
        """Per-bin mean prediction, label rate and weight over everything accumulated (and synced)."""
        out = _reliability_compute(*(getattr(self, name) for name in self._names))
        return {key: self._squeeze_tasks(value) for key, value in out.items()}

    def plot(
        self,
        val: Mapping[str, Tensor] | None = None,
        ax: Any = None,
        labels: Sequence[str] | None = None,
    ) -> Any:
        """Draw the reliability diagram (label rate against mean prediction, one line per task).

        Args:
            val: a value returned by :meth:`compute` (``compute()`` when ``None``).
            ax: an existing matplotlib axis to draw into.
            labels: one legend label per task.

        Returns:
            ``(figure, axis)`` as in TorchMetrics (``figure`` is ``None`` when ``ax`` is given).

        Raises:
            TypeError: ``val`` is not one such dict (a list of values over steps has no single
                diagram: plot each into one ``ax``, naming it with ``labels``).

        Examples:
            >>> import torch
            >>> from torchmetrics_ext import Reliability
            >>> metric = Reliability(num_bins=5)
            >>> metric.update(torch.rand(100), torch.randint(0, 2, (100,)))
            >>> fig, ax = metric.plot()
        """
        from torchmetrics_ext.utilities.plot import plot_reliability

        if val is not None and not isinstance(val, Mapping):
            raise WrongTypeError(
                "Expected `val` to be one dict returned by Reliability.compute(): a reliability diagram draws one "
                f"value, got {type(val).__name__}. For values over steps, plot each into one axis: "
                "`fig, ax = metric.plot(values[0], labels=['step 0'])`, then `metric.plot(v, ax=ax, labels=[...])`."
            )
        return plot_reliability(self.compute() if val is None else val, ax=ax, labels=labels)
