"""Graded relevance in a task that a metric of 0/1 labels also reads: the invalid rows say which metrics and why.

The ranking names (``ndcg@10``...) read a task's labels as graded relevance (any finite value ``>= 0``);
``auc``, ``gauc``... take 0/1 labels and ``ne``, ``calibration``... labels in ``[0, 1]``. A task read by both
is checked by the strictest rule (docs/evaluate.md, "Invalid rows"), so a grade of 2 is an invalid row of the
task: ``on_invalid="error"`` refuses the file, ``on_invalid="skip"`` drops the row for every metric of the task,
the ranking names included. Both stay as documented (bad input is refused, docs/policies.md; a skipped row is
the task's), since a 2 in a click column may as well be a corrupt label; what this module adds is the reason.
The error's line for the label column names the metrics of each kind and the way out (a 0/1 column of its own
for the metrics of 0/1 labels, with ``metric_tasks``), and a run that skipped such rows says in its warnings
that the ranking names lost them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GradedLabels", "graded_label_checks"]

_SAID = {"binary": "0/1 labels", "unit": "labels in [0, 1]"}
# the checker's reasons (evaluate.checks.RowChecker) for labels outside the binary and the unit domains
_REASONS = ("that are not 0 or 1", "outside [0, 1]")


@dataclass(frozen=True)
class GradedLabels:
    """A task whose labels ranking names read as grades and other metrics as 0/1 (or ``[0, 1]``) labels.

    Examples:
        >>> check = GradedLabels("click", "y", ("ndcg@10",), (("auc", "binary"), ("ne", "unit")))
        >>> print(check.hint("y", "that are not 0 or 1"))  # `ne` takes a 0.5: it refuses grades above 1 only
        ; if they are graded relevance, which ['ndcg@10'] read as grades while ['auc'] take 0/1 labels only (['ne'] ...
        >>> check.hint("p", "outside [0, 1] (probabilities expected)")
        ''
    """

    task: str
    column: str
    graded: tuple[str, ...]  # the ranking names reading the task: they take the grades
    strict: tuple[tuple[str, str], ...]  # (name, "binary" or "unit"): the metrics of 0/1 labels (or in [0, 1])

    def _refusing(self, reason: str) -> tuple[list[str], list[str]]:
        """The strict metrics that refuse every row of ``reason``, and those that refuse only its grades above 1.

        Rows "that are not 0 or 1" (the rule of 0/1 labels, the strictest) are refused by the metrics of 0/1
        labels; a metric of labels in [0, 1] (``ne``, ``calibration``) takes a soft label such as 0.5 and refuses
        only the grades above 1 among them. Rows "outside [0, 1]" (no metric of 0/1 labels reads the task) are
        refused by every strict metric.
        """
        if reason == _REASONS[1]:
            return [name for name, _ in self.strict], []
        if reason != _REASONS[0]:
            return [], []
        binary = [name for name, target in self.strict if target == "binary"]
        return binary, [name for name, target in self.strict if target != "binary"]

    def _recipe(self, refusing: list[str], above_one: list[str]) -> str:
        said = " or ".join(dict.fromkeys(_SAID[target] for name, target in self.strict if name in refusing))
        ranked = list(self.graded)
        also = f" ({above_one} take labels in [0, 1], so they refuse only the grades above 1)" if above_one else ""
        return (
            f"if they are graded relevance, which {ranked} read as grades while {refusing} take {said} only{also}: "
            f"score {refusing + above_one} on a 0/1 column of their own (e.g. `{self.column} > 0`) as another task and "
            f"keep task {self.task!r} for the ranking names, `metric_tasks={{{refusing[0]!r}: [<that task>], "
            f"{ranked[0]!r}: [{self.task!r}]}}` (--metric-tasks), or evaluate the ranking names without them"
        )

    def hint(self, column: str, reason: str) -> str:
        """What to append to the invalid-row line of ``column`` for ``reason``; ``""`` where it is not this case."""
        refusing, above_one = self._refusing(reason) if column == self.column else ([], [])
        return f"; {self._recipe(refusing, above_one)}" if refusing else ""

    def skipped(self, column: str, reason: str, count: int) -> str | None:
        """The warning for ``count`` rows of ``column`` skipped for ``reason``; ``None`` where it is not this case."""
        refusing, above_one = self._refusing(reason) if column == self.column else ([], [])
        if not refusing or not count:
            return None
        rows = "row" if count == 1 else "rows"
        return (
            f"{count:,} {rows} of column {self.column!r} (labels of task {self.task!r}) {reason} were skipped for "
            f"every metric of task {self.task!r}, {list(self.graded)} included, whose values leave them out; "
            f"{self._recipe(refusing, above_one)}."
        )


def graded_label_checks(tasks: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> list[GradedLabels]:
    """The checks for ``(task, label column, [(metric name, labels it takes), ...])``: tasks read both ways.

    Examples:
        >>> graded_label_checks([("click", "y", [("auc", "binary"), ("ndcg@10", "nonnegative")])])
        [GradedLabels(task='click', column='y', graded=('ndcg@10',), strict=(('auc', 'binary'),))]
        >>> graded_label_checks([("click", "y", [("ne", "unit"), ("auc", "binary")])])  # no ranking name
        []
    """
    checks = []
    for task, column, readers in tasks:
        graded = tuple(name for name, target in readers if target == "nonnegative")
        strict = tuple((name, target) for name, target in readers if target in _SAID)
        if graded and strict:
            checks.append(GradedLabels(task, column, graded, strict))
    return checks
