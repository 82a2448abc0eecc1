"""The notes of an evaluation (``EvaluationResult.warnings``), and the ones raised as Python warnings.

``torchmetrics-ext evaluate`` prints every note as a ``warning:`` line on stderr; from Python the same
lines sit in the result's ``warnings``, which nothing prints. A note that means "these numbers may not be
what you think" is also raised as a Python warning, pointing at the caller's line
(:func:`~torchmetrics_ext.utilities.warnings.user_stacklevel`), so that a notebook shows it; a note that
only says what was done as asked stays a line of ``warnings``. The notes, in the order the result lists
them, and what each is raised as (docs/evaluate.md, "Notes and warnings"):

============================================================  =====================================
note                                                          raised from Python as
============================================================  =====================================
a ``weight`` column in the data left unread (no ``weights``)  :class:`UnreadWeightsWarning`
``user``/``session`` ids given that no metric reads           (a line only: nothing asked was lost)
``from_logits=True`` that changed nothing (``metric_tasks``)  :class:`ResultCaveatWarning`
rows left out by ``ignore_index``, per label column           (a line only: what was asked)
graded labels skipped for the ranking names too               :class:`ResultCaveatWarning`
a value undefined over all rows or in segments (``nan``)      ``UndefinedMetricWarning`` per line
a task without a valid row in segments (``rows`` 0, ``nan``)  :class:`ResultCaveatWarning`
``by`` text with spaces around it (a segment of its own)      :class:`ResultCaveatWarning`
``by`` text holding the empty text (not the null segment)     :class:`ResultCaveatWarning`
============================================================  =====================================

An undefined value is the package's :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning`, as a
metric's ``compute`` raises it, once per line (per metric, tasks and reason, counting the segments): a thousand
single-class segments are one warning. Every warning is raised after the result is complete, by rank 0 alone
under ``torchrun`` (every rank returns the same lines). The command line prints the lines itself and raises none
of them (nothing is said twice); it adds one note of its own, first, where ``--metrics`` leaves out a task of a
``--config`` file.
"""

from __future__ import annotations

from collections.abc import Iterable

from torchmetrics_ext.utilities.warnings import warn_at_user

__all__ = ["Note", "ResultCaveatWarning", "UnreadWeightsWarning", "raise_notes"]

# a note's line and the category it is raised as from Python (``None``: a line of ``warnings`` only)
Note = tuple[str, "type[Warning] | None"]


class ResultCaveatWarning(UserWarning):
    """A note of ``evaluate`` that says its numbers may not be what the caller thinks.

    Rows dropped for some metrics (graded labels skipped for the ranking names), a task left without a
    valid row in some segments (its values there ``nan``, ``rows`` 0), ``by`` text that makes segments
    of its own (spaces around a value, the empty text beside null), a ``from_logits=True`` that changed
    nothing. The same line is in the result's ``warnings`` (and a ``warning:`` line of the command line,
    which raises no Python warning). Values that are undefined (``nan``) are raised as
    :class:`~torchmetrics_ext.utilities.warnings.UndefinedMetricWarning` instead, one per line.
    Silence these with ``warnings.filterwarnings("ignore", category=ResultCaveatWarning)``.

    Examples:
        >>> import warnings
        >>> import pyarrow as pa
        >>> from torchmetrics_ext.evaluate import ResultCaveatWarning, evaluate
        >>> table = pa.table({"p": [0.2, 0.9, 0.6, 0.4], "y": [0, 1, 1, 0], "country": ["fr", "fr ", "fr", "fr "]})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     result = evaluate(table, {"click": ("p", "y")}, ["ctr"], by="country")
        >>> caught[0].category is ResultCaveatWarning, str(caught[0].message) == result.warnings[0]
        (True, True)
        >>> str(caught[0].message)[:61]
        "--by column 'country' holds 1 text value with spaces around i"
    """


class UnreadWeightsWarning(ResultCaveatWarning):
    """The data holds a ``weight`` column that ``evaluate`` did not read: every row weighed 1.

    ``evaluate`` takes weights from its ``weights`` argument alone (a column added to the logs never
    changes past numbers), where a :class:`~torchmetrics_ext.RecMetricModule` weights a task by its
    ``weight`` column. From Python the note is this warning as well as a line of the result's
    ``warnings``, so a call that forgot ``weights=`` does not report unweighted values without a word;
    ``torchmetrics-ext evaluate`` prints it as its ``warning:`` line instead. A
    :class:`ResultCaveatWarning`, as every note of that kind.

    Examples:
        >>> import warnings
        >>> import pyarrow as pa
        >>> from torchmetrics_ext.evaluate import UnreadWeightsWarning, evaluate
        >>> table = pa.table({"p": [0.2, 0.9, 0.6], "y": [0, 1, 0], "weight": [1.0, 1.0, 3.0]})
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     result = evaluate(table, {"click": ("p", "y")}, ["ctr"])
        >>> caught[0].category is UnreadWeightsWarning, round(result.values["ctr/click"], 4)
        (True, 0.3333)
        >>> round(evaluate(table, {"click": ("p", "y")}, ["ctr"], weights="weight").values["ctr/click"], 4)
        0.2
    """


def raise_notes(notes: Iterable[Note], raising: bool = True) -> list[str]:
    """Raise each note that has a category, once per line, at the caller's line; return every line, once.

    Called last, once the result is built: a filter that turns a warning into an error stops the call
    there, as it would stop a metric's ``compute``. ``raising=False`` (every rank of a ``torchrun`` job
    but rank 0) raises nothing: the lines are the same on every rank, and a job of 8 processes would
    show each warning 8 times.
    """
    lines: dict[str, type[Warning] | None] = {}
    for line, category in notes:
        if lines.get(line) is None:  # a line said twice keeps the category it has
            lines[line] = category
    if raising:
        for line, category in lines.items():
            if category is not None:
                warn_at_user(line, category)
    return list(lines)
